"""Image-text (CLIP-style) targets: the adapter (batching, counting, budget, checks), the
entry-point forms, and Hugging Face CLIP / SigLIP folders equal to transformers' own."""

from __future__ import annotations

import json
import sys
import uuid

import pytest
import torch
from torch import nn

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.targets.families import FAMILIES, load_target
from leakprobe.targets.image_text import ImageTextModel, ModuleImageText, load_image_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIM = 8


def _text_vector(text: str) -> torch.Tensor:
    """A fixed vector per text (seeded by its characters), at scale 3."""
    g = torch.Generator().manual_seed(sum(map(ord, text)) % 2**31)
    return 3 * torch.randn(DIM, generator=g)


class Toy(nn.Module):
    """Unnormalised embeddings of both towers; counts its calls; takes 16-px images only."""

    input_size = 16

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, DIM)
        self.image_calls: list[int] = []
        self.text_calls: list[int] = []

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-2:] == (16, 16)
        self.image_calls.append(images.shape[0])
        return 5 * self.proj(images.mean(dim=(2, 3)))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self.text_calls.append(len(texts))
        return torch.stack([_text_vector(t) for t in texts])


def test_module_image_text_batches_counts_and_normalises():
    model = Toy()
    target = ModuleImageText(model, batch_size=4, budget=20)
    assert isinstance(target, ImageTextModel) and target.kind == "image-text"
    assert target.input_size == 16 and target.embed_dim == DIM and target.queries == 0
    model.image_calls.clear(), model.text_calls.clear()  # the probe is not counted
    x = torch.rand(6, 3, 32, 32)  # resized to 16
    emb = target.embed_images(x)
    assert emb.shape == (6, DIM) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-6)
    assert model.image_calls == [4, 2] and target.queries == 6
    texts = ["a red circle", "a blue square", "two dots", "a cat", "dog"]
    txt = target.embed_texts(texts)
    assert model.text_calls == [4, 1] and target.queries == 11
    expected = torch.stack([_text_vector(t) for t in texts])
    assert torch.allclose(txt, expected / expected.norm(dim=1, keepdim=True), atol=1e-6)
    assert target.embed_texts([]).shape == (0, DIM) and target.queries == 11


def test_the_budget_is_refused_before_the_model_runs():
    model = Toy()
    target = ModuleImageText(model, budget=5)
    model.image_calls.clear(), model.text_calls.clear()
    target.embed_texts(["a", "b", "c"])
    with pytest.raises(BudgetExceededError, match="3 of 5 used, 3 more requested"):
        target.embed_images(torch.rand(3, 3, 16, 16))
    with pytest.raises(BudgetExceededError):
        target.embed_texts(["d", "e", "f"])
    assert model.image_calls == [] and model.text_calls == [3] and target.queries == 3


class Bad:
    """A plain object whose towers answer ``kind`` of wrong."""

    input_size = 8

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def embed_images(self, images: torch.Tensor) -> object:
        n = images.shape[0]
        return {"nan": torch.full((n, 4), float("nan")), "3d": torch.ones(n, 4, 2),
                "rows": torch.ones(n + 1, 4), "zero": torch.zeros(n, 4),
                "list": [[1.0] * 4] * n}.get(self.kind, torch.ones(n, 4))

    def embed_texts(self, texts: list[str]) -> object:
        if self.kind == "width":
            return torch.ones(len(texts), 5)
        if self.kind == "raises":
            raise RuntimeError("no text tower here")
        return torch.ones(len(texts), 4)


@pytest.mark.parametrize(("kind", "message"), [
    ("nan", r"returned NaN/inf values \(\(B,D\) image embeddings\)"),
    ("3d", r"must return \(B,D\) image embeddings, got \(2, 4, 2\)"),
    ("rows", r"must return \(B,D\) image embeddings, got \(3, 4\)"),
    ("list", r"must return \(B,D\) image embeddings, got list"),
    ("zero", "returned an all-zero image embedding"),
    ("width", "returned text embeddings of size 5, but 4 for images"),
    ("raises", "rejects texts: no text tower here"),
])
def test_bad_outputs_are_refused_in_one_line(kind, message):
    with pytest.raises(LeakprobeError, match=message) as info:
        ModuleImageText(Bad(kind), name="bad")
    assert "\n" not in str(info.value)


def test_a_model_without_both_towers_is_refused():
    class ImagesOnly:
        def embed_images(self, images):
            return torch.ones(images.shape[0], 4)

    with pytest.raises(LeakprobeError, match=r"has no embed_texts\(\) method"):
        ModuleImageText(ImagesOnly())
    with pytest.raises(LeakprobeError, match="texts must be a list of strings, got one str"):
        ModuleImageText(Bad("ok")).embed_texts("a lone string")  # type: ignore[arg-type]


ENTRY = """
import torch


class Plain:
    input_size = 8

    def embed_images(self, images):
        return images.flatten(1)[:, :6] + 1

    def embed_texts(self, texts):
        return torch.stack([torch.arange(6.0) + len(t) for t in texts])


def build():
    return Plain()


def wrong():
    return torch.nn.Identity()
"""


@pytest.fixture
def entry_file(tmp_path, monkeypatch):
    name = f"it_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(ENTRY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / f"{name}.py"
    sys.modules.pop(name, None)


def test_factory_forms_and_a_wrong_return_type(entry_file):
    target = load_image_text(f"{entry_file}:build", budget=4)
    assert isinstance(target, ModuleImageText) and target.input_size == 8
    assert target.embed_images(torch.rand(2, 3, 8, 8)).shape == (2, 6)
    module_form = load_target(f"{entry_file.stem}:build", family="image-text", device="cpu",
                              batch_size=3)
    assert module_form.batch_size == 3 and module_form.embed_texts(["ab"]).shape == (1, 6)
    with pytest.raises(LeakprobeError, match=f"{entry_file.name}:wrong: the factory returned "
                                             "Identity, which has no embed_images"):
        load_image_text(f"{entry_file}:wrong")
    with pytest.raises(LeakprobeError, match="--arch clip: image-text models are loaded "
                                             "without an architecture name"):
        load_target(f"{entry_file}:build", family="image-text", arch="clip")


def test_unknown_forms_say_which_load(tmp_path):
    forms = "an image-text --model is a folder holding image_text.safetensors"
    with pytest.raises(LeakprobeError, match=f"nope: no such folder; {forms}"):
        load_image_text(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeakprobeError, match=f"not an image-text model folder .*; {forms}"):
        load_image_text(str(tmp_path / "empty"))
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(LeakprobeError, match=r"model_type 'vit' is not an image-text model "
                                             r"\(supported: clip, siglip\)"):
        load_image_text(f"hf:{vit}")
    with pytest.raises(LeakprobeError, match="no such folder, nor a model in the local"):
        load_image_text(f"hf:{tmp_path / 'missing'}")


def test_a_trained_folder_is_read_by_the_training_recipe(tmp_path, monkeypatch):
    from leakprobe.training import image_text as recipe

    seen = {}

    def fake(folder, *, device="cpu"):
        seen["folder"], seen["device"] = folder, device
        return Toy()

    monkeypatch.setattr(recipe, "load_trained_image_text", fake)
    (tmp_path / "image_text.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")  # the trained weights win over config.json
    target = load_image_text(str(tmp_path))
    assert isinstance(target.model, Toy) and seen == {"folder": tmp_path, "device": "cpu"}


# ---- Hugging Face CLIP and SigLIP folders --------------------------------------------------

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
TEXTS = ["a photo of a cat", "cat", "two red circles on a white background"]


def _clip_folder(folder):
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in ByteLevel.alphabet():
            vocab.setdefault(c + suffix, len(vocab))
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=48, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                       image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.4, 0.3]
                       ).save_pretrained(folder)


def _siglip_folder(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    words = ["<pad>", "</s>", "<unk>", *sorted({w for t in TEXTS for w in t.split()})]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(words), max_position_embeddings=16, bos_token_id=None,
                         eos_token_id=1, pad_token_id=0, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY))
    torch.manual_seed(1)
    SiglipModel(config).save_pretrained(folder)  # no preprocessor_config.json: 0.5 / 0.5


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("hf-image-text")
    _clip_folder(root / "clip")
    _siglip_folder(root / "siglip")
    return root


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_hf_clip_equals_transformers_own_features(hf_folders):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    folder = hf_folders / "clip"
    target = load_image_text(f"hf:{folder}", query_precision="fp32")
    assert target.input_size == 32 and target.embed_dim == 16
    model = CLIPModel.from_pretrained(folder).eval()
    levels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    pixels = AutoImageProcessor.from_pretrained(folder)(images=list(levels.numpy()),
                                                        return_tensors="pt")["pixel_values"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        ref_images = _unit(_features(model.get_image_features(pixel_values=pixels)))
        ref_texts = {padding: _unit(_features(model.get_text_features(**tokenizer(
            TEXTS, padding=padding, max_length=48, truncation=True, return_tensors="pt"))))
                     for padding in ("max_length", True)}  # leakprobe's, the model card's
    images = levels.permute(0, 3, 1, 2).float() / 255
    assert (target.embed_images(images) - ref_images).abs().max() < 1e-5
    texts = target.embed_texts(TEXTS)
    assert (texts - ref_texts["max_length"]).abs().max() < 1e-5
    assert (texts - ref_texts[True]).abs().max() < 1e-5
    assert target.queries == 6
    # a text is tokenised the same alone as in a batch (its embedding moves by rounding only)
    assert (target.embed_texts(TEXTS[1:2]) - texts[1:2]).abs().max() < 1e-6
    bare = load_target(str(folder), family="image-text", device="cpu", query_precision="fp32")
    assert torch.equal(bare.embed_texts(TEXTS[:1]), target.embed_texts(TEXTS[:1]))


def test_hf_siglip_equals_transformers_own_features(hf_folders):
    from transformers import AutoTokenizer, SiglipModel

    folder = hf_folders / "siglip"
    target = load_image_text(f"hf:{folder}", query_precision="fp32")
    assert target.input_size == 32 and target.embed_dim == 32
    model = SiglipModel.from_pretrained(folder).eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = AutoTokenizer.from_pretrained(folder)(TEXTS, padding="max_length", max_length=16,
                                                   truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref_images = _unit(_features(model.get_image_features(pixel_values=(x - 0.5) / 0.5)))
        ref_texts = _unit(_features(model.get_text_features(**tokens)))
    assert (target.embed_images(x) - ref_images).abs().max() < 1e-5
    assert (target.embed_texts(TEXTS) - ref_texts).abs().max() < 1e-5
    # one text alone is padded as in a batch: the same embedding
    assert (target.embed_texts(TEXTS[1:2]) - ref_texts[1:2]).abs().max() < 1e-5


def test_hf_folder_without_a_tokenizer_or_weights_is_one_line(hf_folders, tmp_path):
    import shutil

    folder = tmp_path / "clip"
    shutil.copytree(hf_folders / "clip", folder)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(LeakprobeError, match="cannot load its tokenizer") as info:
        load_image_text(f"hf:{folder}")
    assert "\n" not in str(info.value)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(LeakprobeError,
                       match="no tokenizer in .*tokenizer.json, vocab.json") as info:
        load_image_text(f"hf:{folder}")
    assert "\n" not in str(info.value)
    (folder / "model.safetensors").unlink()
    with pytest.raises(LeakprobeError, match="no \\*.safetensors weights"):
        load_image_text(str(folder))


def test_the_family_is_registered():
    fam = FAMILIES["image-text"]
    assert fam.target is ImageTextModel and fam.loader is load_image_text
    assert fam.client.kind == fam.service.kind == "image-text"
    assert fam.client.route == fam.service.route == "/v1/embed_images"
    assert not fam.loader_takes_arch and fam.report_kind == "image-text-membership"
