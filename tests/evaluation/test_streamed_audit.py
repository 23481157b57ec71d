"""An audit over streamed image folders: same numbers as in memory, and no whole-set copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from leakprobe.data.images import ImageSet
from leakprobe.data.limits import set_data_workers, set_memory_cap
from leakprobe.data.loaders import load_image_folder, save_image_folder
from leakprobe.errors import LeakprobeError
from leakprobe.workflows.audit import audit_encoder

# shares the session fixture of these files: built once, on one xdist worker
pytestmark = pytest.mark.xdist_group("memorising-target")


@pytest.fixture(scope="module")
def folders(memorising_target, tmp_path_factory):
    """The memorising target's members and non-members written as PNG folders (flat)."""
    root = tmp_path_factory.mktemp("streamed-audit")
    for side in ("members", "nonmembers"):
        s = memorising_target[side]
        save_image_folder(ImageSet(s.images, s.ids), root / side)
    return root


@pytest.fixture(autouse=True)
def _defaults():
    yield
    set_memory_cap(None)
    set_data_workers(None)


def _scores(report: dict) -> dict:
    return {r["attack"]: r["samples"]["score"] for r in report["results"]}


def test_streamed_audit_equals_in_memory_audit(memorising_target, folders: Path,
                                               one_torch_thread) -> None:
    target = memorising_target["target"]
    runs = {}
    for stream in (False, True):
        members = load_image_folder(folders / "members", 32, stream=stream)
        nonmembers = load_image_folder(folders / "nonmembers", 32, stream=stream)
        assert members.streamed is stream
        runs[stream] = audit_encoder(target, members, nonmembers, attacks="all",
                                     permutations=3, seed=0)
    assert _scores(runs[True]) == _scores(runs[False])
    assert len(_scores(runs[True])) >= 6  # partcrop, encodermi x3, lpla, baselines, blind
    aucs = {r["attack"]: r["metrics"]["auc"] for r in runs[True]["results"]}
    assert aucs["encodermi-threshold"] > 0.8  # still the memorising target


def test_audit_of_a_folder_larger_than_the_memory_cap(memorising_target, folders: Path,
                                                      tmp_path: Path, one_torch_thread) -> None:
    """64 + 64 images at 32 px are 1.5 MB as floats: a 256 KB cap forbids holding either
    side whole, and the audit still completes from the CLI (streamed end to end)."""
    from leakprobe.models.serialization import export_torchscript

    model = export_torchscript(memorising_target["target"].module, tmp_path / "enc.pt")
    members = load_image_folder(folders / "members", 32)
    set_memory_cap("256KB")
    with pytest.raises(LeakprobeError, match="memory cap"):
        _ = members.images  # the cap is real: a whole copy is refused
    set_memory_cap(None)
    out = tmp_path / "out"
    code, _, err = run_cli("--memory-cap", "256KB", "--data-workers", "2", "audit", "encoder",
                           "--model", str(model), "--members", str(folders / "members"),
                           "--nonmembers", str(folders / "nonmembers"),
                           "--attacks", "encodermi-threshold,baseline-norm",
                           "--permutations", "0", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert {r["attack"] for r in report["results"]} == {
        "encodermi-threshold", "baseline-norm", "blind"}
    assert all(r["n_members"] == 64 for r in report["results"])


def test_memory_cap_error_from_the_cli_is_one_line(folders: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("--memory-cap", "lots", "audit", "encoder", "--model", "x.pt",
                           "--members", str(folders / "members"),
                           "--nonmembers", str(folders / "nonmembers"))
    assert code == 2 and err.startswith("error: bad memory size 'lots'")
    assert len(err.strip().splitlines()) == 1


def test_training_streams_a_folder(folders: Path) -> None:
    """SSL training reads one batch per step from a streamed set: same loss as in memory."""
    from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
    from leakprobe.training.trainer import TrainConfig

    recipe = EncoderRecipe("simclr", "resnet-tiny")
    config = dict(epochs=1, batch_size=32, lr=1e-3, amp="off", seed=0, device="cpu")
    losses = {}
    for stream in (False, True):
        data = load_image_folder(folders / "members", 32, stream=stream)
        _, losses[stream] = train_ssl_encoder(data.pixels, recipe, TrainConfig(**config))
    assert losses[True] == losses[False]
    assert torch.isfinite(torch.tensor(losses[True])).all()
