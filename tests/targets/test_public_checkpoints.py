"""Published self-supervised checkpoints, built here in their authors' exact layouts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli_runner import run_cli
from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.targets.checkpoints import read_checkpoint
from leakprobe.targets.loading import load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VIT = "vit-tiny-patch16"
VIT_SIZE = 32  # 2 x 2 patches: the position embeddings (stored for 224) are interpolated
RESNET_SIZE = 64


def randomised(arch: str, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A model of ``arch`` with random weights, BatchNorm statistics included, and its state."""
    torch.manual_seed(seed)
    model = create_model(arch).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias")):
                t.normal_(0, 0.1)
            elif t.is_floating_point() and name.endswith(("bn1.weight", "bn2.weight")):
                t.uniform_(0.5, 1.5)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def shifted(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Other weights of the same shapes (a momentum encoder, a student)."""
    return {k: v + 1 if v.is_floating_point() else v.clone() for k, v in state.items()}


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def flattened(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under dotted names: its safetensors form."""
    if isinstance(obj, torch.Tensor):
        return {prefix.rstrip("."): obj.contiguous().clone()}
    if isinstance(obj, dict):
        out: dict[str, torch.Tensor] = {}
        for k, v in obj.items():
            out.update(flattened(v, f"{prefix}{k}."))
        return out
    return {}


def save_both(checkpoint: dict, folder: Path, stem: str, suffix: str = ".pth") -> list[Path]:
    pth, st = folder / f"{stem}{suffix}", folder / f"{stem}.safetensors"
    torch.save(checkpoint, pth)
    save_file(flattened(checkpoint), str(st))
    return [pth, st]


def check_same(path: Path, arch: str, model: torch.nn.Module, size: int, **kw) -> None:
    enc = load_encoder(str(path), arch=arch, image_size=size, device="cpu", **kw)
    torch.manual_seed(1)
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        want_embed, want_tokens = model(x), model.tokens(x)
    assert enc.input_size == size and enc.has_tokens
    torch.testing.assert_close(enc.embed(x), want_embed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.tokens(x), want_tokens, rtol=1e-5, atol=1e-5)


def vit_head(dim: int) -> dict[str, torch.Tensor]:
    return {"head.0.weight": torch.randn(64, dim), "head.0.bias": torch.randn(64),
            "head.2.weight": torch.randn(32, 64)}


def test_public_architectures_are_registered_with_their_published_shapes():
    from leakprobe.models import list_models

    assert {"resnet50", "vit-tiny-patch16", "vit-small-patch16", "vit-small-patch8",
            "vit-base-patch16", "vit-tiny"} <= set(list_models())
    vit = create_model("vit-small-patch8")
    assert vit.embed_dim == 384 and vit.input_size == 224
    assert tuple(vit.pos_embed.shape) == (1, 1 + 28 * 28, 384)
    assert create_model("resnet50").embed_dim == 2048


def test_torchvision_resnet50_with_its_classifier(tmp_path):
    model, state = randomised("resnet50", 0)
    state.pop("layer1.0.bn1.num_batches_tracked")  # older files lack the counters
    checkpoint = {**state, "fc.weight": torch.randn(10, 2048), "fc.bias": torch.randn(10)}
    for path in save_both(checkpoint, tmp_path, "resnet50"):
        check_same(path, "resnet50", model, RESNET_SIZE)


def test_moco_v2_resnet50_query_encoder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEAKPROBE_QUIET", "0")
    model, state = randomised("resnet50", 0)
    checkpoint = {
        "epoch": 800, "arch": "resnet50",
        "state_dict": {
            **prefixed("module.encoder_q.", state),
            "module.encoder_q.fc.0.weight": torch.randn(32, 2048),
            "module.encoder_q.fc.0.bias": torch.randn(32),
            "module.encoder_q.fc.2.weight": torch.randn(16, 32),
            "module.encoder_q.fc.2.bias": torch.randn(16),
            **prefixed("module.encoder_k.", shifted(state)),
            "module.queue": torch.randn(16, 64), "module.queue_ptr": torch.zeros(1),
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0, 1]}]},
    }
    legacy = tmp_path / "moco_v2_legacy.pth.tar"  # the 2020 release predates zip files
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    for path in [*save_both(checkpoint, tmp_path, "moco_v2", ".pth.tar"), legacy]:
        check_same(path, "resnet50", model, RESNET_SIZE)
    err = capsys.readouterr().err
    assert "from 'state_dict.module.encoder_q.'" in err and "state_dict.module.queue (1)" in err


def test_moco_v3_vit_base_encoder(tmp_path):
    model, state = randomised(VIT, 0)
    checkpoint = {
        "epoch": 300, "arch": "vit_small",
        "state_dict": {
            **prefixed("module.base_encoder.", {**state, **vit_head(192)}),
            **prefixed("module.momentum_encoder.", {**shifted(state), **vit_head(192)}),
            "module.predictor.0.weight": torch.randn(32, 32),
        },
        "scaler": {"scale": 1024.0},
    }
    for path in save_both(checkpoint, tmp_path, "mocov3", ".pth.tar"):
        check_same(path, VIT, model, VIT_SIZE)


def test_dino_teacher_by_default_student_on_request(tmp_path):
    teacher, state = randomised(VIT, 0)
    student, student_state = randomised(VIT, 1)
    dino_head = {"head.mlp.0.weight": torch.randn(64, 192), "head.last_layer.weight_g":
                 torch.randn(100, 1), "head.last_layer.weight_v": torch.randn(100, 32)}
    checkpoint = {
        "teacher": {**prefixed("backbone.", state), **dino_head},
        "student": {**prefixed("module.backbone.", student_state),
                    **prefixed("module.", dino_head)},
        "epoch": 100, "args": argparse.Namespace(arch="vit_tiny", patch_size=16),
        "dino_loss": {"center": torch.zeros(1, 100)},
    }
    for path in save_both(checkpoint, tmp_path, "dino_full"):
        check_same(path, VIT, teacher, VIT_SIZE)
        check_same(path, VIT, student, VIT_SIZE, checkpoint_key="student")
        with pytest.raises(LeakprobeError, match="no such section.*student, teacher"):
            load_encoder(str(path), arch=VIT, image_size=VIT_SIZE, device="cpu",
                         checkpoint_key="nope")


def test_dino_released_backbone_plain_state_dict(tmp_path):
    model, state = randomised(VIT, 0)
    for path in save_both(state, tmp_path, "dino_deittiny16_pretrain"):
        check_same(path, VIT, model, VIT_SIZE)


def test_mae_model_without_decoder_and_mask_token(tmp_path):
    model, state = randomised(VIT, 0)
    checkpoint = {"model": {
        **state, "mask_token": torch.zeros(1, 1, 128),
        "decoder_embed.weight": torch.randn(128, 192), "decoder_pos_embed": torch.zeros(1, 5, 128),
        "decoder_blocks.0.norm1.weight": torch.ones(128), "decoder_norm.weight": torch.ones(128),
        "decoder_pred.weight": torch.randn(768, 128),
    }}
    for path in save_both(checkpoint, tmp_path, "mae_pretrain_vit_tiny"):
        check_same(path, VIT, model, VIT_SIZE)


def test_backbone_and_encoder_prefixes(tmp_path):
    model, state = randomised(VIT, 0)
    for prefix in ("backbone.", "encoder."):
        checkpoint = {**prefixed(prefix, state), "projector.0.weight": torch.randn(8, 192)}
        path = save_both(checkpoint, tmp_path, prefix.strip("."))[0]
        check_same(path, VIT, model, VIT_SIZE)


def test_wrong_architecture_is_refused_naming_the_tensors(tmp_path):
    _, resnet = randomised("resnet50", 0)
    path = save_both(resnet, tmp_path, "resnet")[0]
    with pytest.raises(LeakprobeError, match="no tensor of architecture 'vit-tiny-patch16'.*"
                       "cls_token.*--arch"):
        load_encoder(str(path), arch=VIT, device="cpu")
    _, vit = randomised(VIT, 0)
    path = save_both({"model": vit}, tmp_path, "vit_tiny")[1]
    with pytest.raises(LeakprobeError, match=r"another shape.*cls_token \(1, 1, 192\) vs "
                       r"\(1, 1, 384\)"):
        load_encoder(str(path), arch="vit-small-patch16", device="cpu")
    missing = {k: v for k, v in vit.items() if k != "norm.weight"}
    path = save_both(missing, tmp_path, "missing")[0]
    with pytest.raises(LeakprobeError, match=r"1 backbone tensors missing \(norm.weight\)"):
        load_encoder(str(path), arch=VIT, device="cpu")
    deeper = {**vit, "blocks.12.norm1.weight": torch.ones(192)}
    path = save_both(deeper, tmp_path, "deeper")[0]
    with pytest.raises(LeakprobeError, match=r"1 unexpected tensors \(blocks.12.norm1.weight\)"):
        load_encoder(str(path), arch=VIT, device="cpu")


def test_pickled_whole_module_is_refused(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(LeakprobeError, match="pickled Python objects.*Linear.*never unpickles"):
        load_encoder(str(path), arch=VIT, device="cpu")
    with pytest.raises(LeakprobeError, match="pickled") as caught:
        read_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_checkpoint_key_is_refused_without_a_checkpoint(tmp_path):
    with pytest.raises(LeakprobeError, match="--checkpoint-key student: only for checkpoint"):
        load_encoder("leakprobe.models:create_model", checkpoint_key="student", device="cpu")


def test_cli_checkpoint_key_reaches_the_loader(tmp_path):
    _, state = randomised(VIT, 0)
    path = save_both({"teacher": prefixed("backbone.", state)}, tmp_path, "dino")[0]
    code, _, err = run_cli("audit", "encoder", "--model", str(path), "--arch", VIT,
                           "--checkpoint-key", "student", "--members", str(tmp_path),
                           "--nonmembers", str(tmp_path), "--out", str(tmp_path / "out"),
                           "--device", "cpu")
    assert code == 2 and "--checkpoint-key student: no such section; the file has teacher" in err


def test_torchscript_pt_stays_torchscript_with_arch(tmp_path):
    model, _ = randomised(VIT, 0)
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    check_same(path, VIT, model, VIT_SIZE)


def test_vit_position_embeddings_stored_for_another_grid(tmp_path):
    model = create_model(VIT, pos_grid=24).eval()  # a ViT fine-tuned at 384 px
    path = save_both({"model": model.state_dict()}, tmp_path, "vit384")[0]
    check_same(path, VIT, model, VIT_SIZE)
    assert load_encoder(str(path), arch=VIT, device="cpu").input_size == 384
