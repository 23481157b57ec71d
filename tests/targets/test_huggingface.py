"""Hugging Face folders (``hf:DIR``) as encoders: outputs equal transformers' own, offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from cli_runner import run_cli  # noqa: E402
from leakprobe.errors import LeakprobeError  # noqa: E402
from leakprobe.models import create_model  # noqa: E402
from leakprobe.targets.encoder import ModuleEncoder  # noqa: E402
from leakprobe.targets.huggingface import HuggingFaceEncoder  # noqa: E402
from leakprobe.targets.loading import load_encoder  # noqa: E402

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
VIT_KW = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 64, "image_size": 32, "patch_size": 8}
CNN_KW = {"hidden_sizes": [8, 16], "depths": [1, 1]}


def _save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(str(folder))
    return folder


def _images(n: int = 3, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))


def _normalised(images: torch.Tensor) -> torch.Tensor:
    return (images - IMAGENET_MEAN) / IMAGENET_STD


def _check(spec: str, reference, images: torch.Tensor, *, tokens_in_space: bool) -> None:
    encoder = load_encoder(spec, device="cpu")
    assert isinstance(encoder, ModuleEncoder)
    assert isinstance(encoder.module, HuggingFaceEncoder)
    want_embedding, want_tokens = reference(images)
    got = encoder.embed(images)
    assert got.shape == want_embedding.shape
    assert encoder.embed_dim == want_embedding.shape[1]
    torch.testing.assert_close(got, want_embedding, atol=1e-5, rtol=1e-5)
    assert encoder.has_tokens
    torch.testing.assert_close(encoder.tokens(images), want_tokens, atol=1e-5, rtol=1e-5)
    assert encoder.tokens_in_embedding_space is tokens_in_space


def _vit_reference(model, skip: int = 1, **call):
    def reference(images):
        with torch.no_grad():
            out = model(pixel_values=_normalised(images), **call)
        return out.last_hidden_state[:, 0], out.last_hidden_state[:, skip:]
    return reference


def test_vit_matches_transformers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = transformers.ViTModel(transformers.ViTConfig(**VIT_KW), add_pooling_layer=False).eval()
    folder = _save(model, tmp_path / "vit")
    images = _images()
    _check(f"hf:{folder}", _vit_reference(model), images, tokens_in_space=True)
    _check(str(folder), _vit_reference(model), images, tokens_in_space=True)  # bare folder
    # other sizes (PartCrop's half-size crops) interpolate the position embeddings
    encoder = load_encoder(f"hf:{folder}", device="cpu")
    assert encoder.flexible_size
    assert encoder.tokens(_images(2, 16)).shape == (2, 4, 32)


def test_vit_with_pooler_and_preprocessor_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = transformers.ViTModel(transformers.ViTConfig(**VIT_KW)).eval()  # pooler saved too
    folder = _save(model, tmp_path / "vit")
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_normalize": True, "do_resize": True,
        "image_mean": mean, "image_std": std, "size": {"height": 32, "width": 32}}))
    images = _images()
    encoder = load_encoder(f"hf:{folder}", device="cpu")
    assert encoder.input_size == 32
    pixels = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(encoder.embed(images), want[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.tokens(images), want[:, 1:], atol=1e-5, rtol=1e-5)


def test_input_size_defaults_to_the_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = transformers.ViTModel(transformers.ViTConfig(**{**VIT_KW, "image_size": 16}),
                                  add_pooling_layer=False)
    folder = _save(model, tmp_path / "vit16")
    assert load_encoder(f"hf:{folder}", device="cpu").input_size == 16


def test_dinov2_matches_transformers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**VIT_KW)).eval()
    folder = _save(model, tmp_path / "dinov2")
    _check(f"hf:{folder}", _vit_reference(model), _images(), tokens_in_space=True)


def test_dinov2_registers_are_not_tokens(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.Dinov2WithRegistersConfig(**VIT_KW, num_register_tokens=4)
    model = transformers.Dinov2WithRegistersModel(config).eval()
    folder = _save(model, tmp_path / "dinov2-reg")
    _check(f"hf:{folder}", _vit_reference(model, skip=5), _images(), tokens_in_space=True)
    assert load_encoder(f"hf:{folder}", device="cpu").tokens(_images()).shape == (3, 16, 32)


def test_vit_mae_runs_unmasked_in_patch_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = transformers.ViTMAEModel(transformers.ViTMAEConfig(**VIT_KW)).eval()
    folder = _save(model, tmp_path / "mae")
    model.config.mask_ratio = 0.0
    noise = torch.arange(16, dtype=torch.float32).expand(3, 16)
    _check(f"hf:{folder}", _vit_reference(model, noise=noise), _images(), tokens_in_space=True)
    assert load_encoder(f"hf:{folder}", device="cpu").tokens(_images()).shape == (3, 16, 32)


def test_clip_vision_embedding_is_the_projection(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(**VIT_KW, projection_dim=24)
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    folder = _save(model, tmp_path / "clip")

    def reference(images):
        with torch.no_grad():
            out = model(pixel_values=_normalised(images))
        return out.image_embeds, out.last_hidden_state[:, 1:]

    _check(f"hf:{folder}", reference, _images(), tokens_in_space=False)


def test_full_clip_folder_gives_its_image_features(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        vision_config=VIT_KW, projection_dim=16,
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64})
    model = transformers.CLIPModel(config).eval()
    folder = _save(model, tmp_path / "clip-full")
    images = _images()
    with torch.no_grad():
        want = model.get_image_features(pixel_values=_normalised(images))
    want = getattr(want, "pooler_output", want)
    encoder = load_encoder(f"hf:{folder}", device="cpu")
    assert encoder.embed_dim == 16
    torch.testing.assert_close(encoder.embed(images), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet", "convnext"])
def test_cnn_pooled_output_and_feature_map(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    if name == "resnet":
        model = transformers.ResNetModel(transformers.ResNetConfig(embedding_size=8, **CNN_KW))
    else:
        model = transformers.ConvNextModel(transformers.ConvNextConfig(num_stages=2, **CNN_KW))
    model.eval()
    folder = _save(model, tmp_path / name)

    def reference(images):
        with torch.no_grad():
            out = model(pixel_values=_normalised(images))
        return out.pooler_output.flatten(1), out.last_hidden_state.flatten(2).transpose(1, 2)

    images = _images()
    _check(f"hf:{folder}", reference, images, tokens_in_space=name == "resnet")
    assert load_encoder(f"hf:{folder}", device="cpu").input_size == 224  # no image_size


def test_missing_folder_and_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(LeakprobeError, match="no such folder") as missing:
        load_encoder(f"hf:{tmp_path / 'nope'}", device="cpu")
    assert "\n" not in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeakprobeError, match="has no config.json") as empty:
        load_encoder(f"hf:{tmp_path / 'empty'}", device="cpu")
    assert "\n" not in str(empty.value)
    # a hub name that is not in the local cache is refused, never downloaded
    with pytest.raises(LeakprobeError, match="never downloads"):
        load_encoder("hf:leakprobe-tests/not-cached-anywhere", device="cpu")


def test_unsupported_model_type_and_missing_weights(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(LeakprobeError, match="'bert' is not supported"):
        load_encoder(f"hf:{folder}", device="cpu")
    torch.manual_seed(0)
    vit = _save(transformers.ViTModel(transformers.ViTConfig(**VIT_KW), add_pooling_layer=False),
                tmp_path / "vit")
    weights = next(vit.glob("*.safetensors"))
    state = load_file(str(weights))
    del state["layernorm.weight"]  # transformers would initialise it at random
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(LeakprobeError, match="1 weights missing .*layernorm.weight"):
        load_encoder(f"hf:{vit}", device="cpu")


def test_train_folder_wins_over_config_json(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    model = create_model("vit-tiny", depth=1)
    save_file(model.state_dict(), str(folder / "encoder.safetensors"),
              metadata={"arch": "vit-tiny", "arch_kwargs": json.dumps({"depth": 1})})
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    encoder = load_encoder(str(folder), device="cpu")
    assert not isinstance(encoder.module, HuggingFaceEncoder)


def test_cli_audit_of_a_hf_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = _save(transformers.Dinov2Model(transformers.Dinov2Config(**VIT_KW)),
                   tmp_path / "dinov2")
    code, out, err = run_cli(
        "audit", "encoder", "--model", f"hf:{folder}", "--members", "synthetic:40:1",
        "--nonmembers", "synthetic:40:2", "--attacks", "baseline-norm", "--permutations", "0",
        "--out", str(tmp_path / "report"))
    assert code == 0, out + err
    assert any((tmp_path / "report").iterdir())


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = _save(transformers.ViTModel(transformers.ViTConfig(**VIT_KW)), tmp_path / "vit")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(LeakprobeError, match="never unpickles pytorch_model.bin"):
        load_encoder(f"hf:{folder}", device="cpu")


def test_without_transformers_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    folder = _save(transformers.ViTModel(transformers.ViTConfig(**VIT_KW)), tmp_path / "vit")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    with pytest.raises(LeakprobeError, match=r"pip install leakprobe\[hf\]") as error:
        load_encoder(f"hf:{folder}", device="cpu")
    assert "\n" not in str(error.value)
