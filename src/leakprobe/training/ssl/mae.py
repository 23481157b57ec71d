"""MAE (He et al., 2022): reconstruct the pixels of masked patches from the visible ones."""

from __future__ import annotations

import torch
from torch import nn

from leakprobe.augment import SSLAugmentation, random_resized_crop
from leakprobe.errors import LeakprobeError
from leakprobe.models.vit import Block, ViT
from leakprobe.training.ssl.base import SSLBatch, SSLMethod, StudentOutputs, register_method
from leakprobe.training.ssl.byol import check_positive, check_unit


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch * patch * C), patches in row-major order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MAEDecoder(nn.Module):
    """A light Transformer decoder: visible latents + mask tokens -> pixels of every patch.

    Args:
        in_dim: encoder width.
        dim: decoder width.
        depth: decoder blocks.
        heads: attention heads.
        n_patches: patches per image (L).
        patch_pixels: values predicted per patch (patch * patch * 3).
    """

    def __init__(
        self, in_dim: int, dim: int, depth: int, heads: int, n_patches: int, patch_pixels: int
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + n_patches, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_pixels)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Latents (B, 1 + K, D), CLS first, and the unshuffling (B, L) -> pixels (B, L, P)."""
        x = self.embed(latent)
        b, n_masked = x.shape[0], ids_restore.shape[1] + 1 - x.shape[1]
        x_ = torch.cat([x[:, 1:], self.mask_token.expand(b, n_masked, -1)], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.pos_embed
        return self.pred(self.norm(self.blocks(x)))[:, 1:]


@register_method("mae")
class MAE(SSLMethod):
    """MAE on a ViT: encode a random 25% of the patches, decode all, score the masked ones.

    ``prepare`` takes one random resized crop per image (area range
    ``augmentation.crop_scale``, horizontal flip; no colour jitter, as the paper) and draws
    an independent random mask per image from the generator; the student gets the crop and
    the mask as inputs (``ids_keep``: visible patches, ``ids_restore``: the inverse
    shuffle), so its output depends on that image alone. Loss: mean squared error between
    predicted and per-patch normalised pixels (``norm_pix``), on masked patches only.
    The exported encoder is the ViT itself (CLS embedding and patch tokens of the whole,
    unmasked image).

    Defaults, paper -> ours: mask ratio 0.75; decoder 8 blocks of width 512 -> 2 blocks of
    width 128 (4 heads); learned instead of fixed sine-cosine decoder positions; crop area
    (0.2, 1) -> ``crop_scale`` of the recipe (pass ``--crop-scale 0.2,1.0`` for the paper's).

    ``dp_per_image_exact`` is True (there is no teacher, queue or batch statistic; masks and
    normalised targets are per image).

    Args:
        backbone: a :class:`~leakprobe.models.vit.ViT` (``--arch vit-tiny``).
        augmentation: its ``size``, ``crop_scale`` and ``flip_p`` are used.
        mask_ratio: fraction of patches masked.
        decoder_dim: decoder width.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads.
        norm_pix: normalise each target patch by its own mean and variance.
    """

    dp_per_image_exact = True
    backbone: ViT  # checked in __init__

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: SSLAugmentation,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix: bool = True,
    ) -> None:
        if not isinstance(backbone, ViT):
            raise LeakprobeError(f"MAE needs a ViT backbone (e.g. --arch vit-tiny), got "
                                 f"{type(backbone).__name__}")
        super().__init__(backbone, augmentation)
        self.mask_ratio = check_unit(mask_ratio, "MAE mask_ratio", closed=False)
        for value, what in ((decoder_dim, "decoder_dim"), (decoder_depth, "decoder_depth"),
                            (decoder_heads, "decoder_heads")):
            check_positive(value, f"MAE {what}")
        if decoder_dim % decoder_heads:
            raise LeakprobeError(f"MAE decoder_dim ({decoder_dim}) must be a multiple of "
                                 f"decoder_heads ({decoder_heads})")
        self.patch = backbone.patch_size
        if augmentation.size % self.patch:
            raise LeakprobeError(f"MAE needs an image size divisible by the patch size "
                                 f"{self.patch}, got {augmentation.size}")
        self.n_patches = (augmentation.size // self.patch) ** 2
        self.n_keep = max(1, int(self.n_patches * (1 - self.mask_ratio)))
        self.norm_pix = bool(norm_pix)
        self.decoder = MAEDecoder(backbone.embed_dim, decoder_dim, decoder_depth, decoder_heads,
                                  self.n_patches, self.patch * self.patch * 3)

    def prepare(self, images: torch.Tensor, generator: torch.Generator) -> SSLBatch:
        aug = self.augmentation
        crops = random_resized_crop(images, aug.size, 1, aug.crop_scale, flip_p=aug.flip_p,
                                    generator=generator)[:, 0]
        b = crops.shape[0]
        shuffle = torch.argsort(torch.rand(b, self.n_patches, generator=generator), dim=1)
        restore = torch.argsort(shuffle, dim=1)
        mask = torch.ones(b, self.n_patches)
        mask[:, :self.n_keep] = 0
        mask = torch.gather(mask, 1, restore)  # 1 = masked, in patch order
        target = patchify(crops, self.patch).float()
        if self.norm_pix:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        dev = crops.device
        inputs = (crops, shuffle[:, :self.n_keep].to(dev), restore.to(dev))
        return SSLBatch(inputs, {"target": target, "mask": mask.to(dev)})

    def student(
        self, crops: torch.Tensor, ids_keep: torch.Tensor, ids_restore: torch.Tensor
    ) -> StudentOutputs:
        return (self.decoder(self.backbone.encode_visible(crops, ids_keep), ids_restore),)

    def objective(self, outputs: StudentOutputs, batch: SSLBatch) -> torch.Tensor:
        mask = batch.extras["mask"]
        err = ((outputs[0].float() - batch.extras["target"]) ** 2).mean(-1)  # (B, L)
        return ((err * mask).sum(1) / mask.sum(1)).mean()
