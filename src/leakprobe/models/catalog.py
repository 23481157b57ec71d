"""What ``leakprobe models`` lists, as a static table: the listing imports neither torch nor
transformers.

The architectures are grouped by what they are for: the layouts of published checkpoints
(``--model FILE.pth --arch NAME``), the Hugging Face ``model_type`` values ``--model hf:DIR``
loads, the small architectures targets are trained with, pixel features, and internal ones.
tests/models/test_model_catalog.py checks the table against the registries it describes
(:func:`leakprobe.models.registry.list_models`, :data:`leakprobe.models.public.PUBLIC_ARCHS`,
:data:`leakprobe.targets.huggingface.SUPPORTED_MODEL_TYPES`,
:func:`leakprobe.training.ssl.base.list_methods`), so an architecture registered without a
line here fails the tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """Names listed together: what they are for, how to use them, one line each.

    Attributes:
        key: the group's key (``published``, ``huggingface``, ``train``...).
        title: what the names are.
        usage: the options that take them.
        names: name -> one line saying what it is.
    """

    key: str
    title: str
    usage: str
    names: dict[str, str]


GROUPS: tuple[Group, ...] = (
    Group("published", "Published checkpoint layouts",
          "--model FILE.pth|.pth.tar|.pt|.safetensors --arch NAME (audit encoder, audit "
          "ownership, steal encoder, serve encoder; --checkpoint-key student for DINO's "
          "student)", {
              "resnet50": "torchvision ResNet-50 (MoCo v2/v3, DINO, SimCLR and BYOL ports): "
                          "2048-d pooled embedding, last feature map as tokens, 224 px",
              "vit-tiny-patch16": "timm ViT-Ti/16: width 192, 12 blocks, 3 heads, 224 px",
              "vit-small-patch16": "timm ViT-S/16 (DINO dino_deitsmall16, MoCo v3 ViT-S): "
                                   "width 384, 12 blocks, 6 heads",
              "vit-small-patch8": "timm ViT-S/8 (DINO dino_deitsmall8): width 384, patch 8",
              "vit-base-patch16": "timm ViT-B/16 (DINO, MoCo v3, MAE ViT-B): width 768, "
                                  "12 blocks, 12 heads",
          }),
    Group("huggingface", "Hugging Face model types",
          "--model hf:DIR, a save_pretrained folder whose config.json has one of these "
          "model_type values (pip install 'leakprobe[hf]'; never downloads)", {
              "vit": "ViTModel: CLS token; patch tokens",
              "dinov2": "Dinov2Model (DINOv2): CLS token; patch tokens",
              "dinov2_with_registers": "Dinov2WithRegistersModel: CLS token; patch tokens, "
                                       "registers left out",
              "vit_mae": "ViTMAEModel (MAE): CLS token, run without masking; patch tokens",
              "clip_vision_model": "CLIPVisionModelWithProjection: projected image_embeds; "
                                   "tokens in another space (PartCrop's token attacks refused)",
              "clip": "CLIPVisionModelWithProjection: the vision tower of a whole CLIP folder",
              "resnet": "ResNetModel: pooled output; last feature map as tokens",
              "convnext": "ConvNextModel: pooled output; last feature map as tokens",
          }),
    Group("train", "Architectures to train targets",
          "leakprobe train encoder|image2image|captioner --arch NAME; also --shadow-arch, "
          "--reference-arch, --surrogate-arch, and --model weights.safetensors --arch NAME", {
              "resnet18-cifar": "ResNet-18 for 32x32 inputs, 512-d (train encoder's default)",
              "resnet-tiny": "ResNet of one block per stage, width 16, 128-d: CPU demos; the "
                             "default of shadows, references and surrogates",
              "vit-tiny": "ViT with patch 4 at 32x32, width 192, depth 6, tokens exposed (MAE "
                          "needs a ViT)",
              "unet-small": "U-Net of width 16 and depth 3 (train image2image's default)",
              "cnn-lstm": "CNN-LSTM captioner (train captioner: the one that trains)",
          }),
    Group("features", "Pixel features",
          "audit image2image --features NAME --features-weights FILE.safetensors", {
              "wide-resnet50-2": "Wide ResNet-50-2 in torchvision's layout (its ImageNet "
                                 "weights converted to safetensors)",
          }),
    Group("internal", "Internal", "built by leakprobe, not an --arch value", {
        "surrogate": "what steal encoder trains: the --surrogate-arch backbone and a linear "
                     "head (its folders load with --model as they are)",
    }),
)

#: SSL methods of ``train encoder --method`` (and ``--shadow-method``, ``--reference-method``).
SSL_METHODS = Group(
    "ssl", "SSL methods", "leakprobe train encoder --method NAME; also --shadow-method, "
    "--reference-method", {
        "byol": "BYOL (Grill et al., 2020): an online network predicts a slow-moving target "
                "network",
        "dino": "DINO (Caron et al., 2021): self-distillation with a centred, sharpened "
                "momentum teacher",
        "mae": "MAE (He et al., 2022): reconstruct masked patches from the visible ones; needs "
               "a ViT (--arch vit-tiny)",
        "moco": "MoCo v2 (Chen et al., 2020): momentum key encoder and a queue of keys",
        "simclr": "SimCLR (Chen et al., 2020): NT-Xent between two augmented views of each "
                  "image (the default)",
    })


def group(key: str) -> Group:
    """The group called ``key`` (:data:`SSL_METHODS` is ``ssl``).

    Raises:
        KeyError: no such group.
    """
    for found in (*GROUPS, SSL_METHODS):
        if found.key == key:
            return found
    raise KeyError(key)


def architectures() -> list[str]:
    """Every registered architecture the table lists, sorted (Hugging Face types are not
    architectures)."""
    return sorted(name for g in GROUPS if g.key != "huggingface" for name in g.names)
