"""`leakprobe train encoder` end to end, and every `--model` form its output folder offers.

The first training run goes through a real subprocess (`python -m leakprobe.cli`), as a user
runs it; the follow-up commands call the same entry point (`leakprobe.cli.main`) in-process,
which keeps the file fast (one interpreter start and one torch import instead of ten).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runner import run_cli as cli

ENV = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1",
       "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "encoder", "--data", "synthetic:80", "--members", "40", "--batch-size", "20",
         "--seed", "0", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leakprobe.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=600)




@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "t1"
    proc = run(*TRAIN, "--arch", "resnet-tiny", "--epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory) -> dict:
    """The audit of the TorchScript export: the other model forms must reproduce it."""
    out = tmp_path_factory.mktemp("ref") / "audit"
    split = str(trained / "split.json")
    code, _, err = cli("audit", "encoder", "--model", str(trained / "encoder.torchscript.pt"),
                       "--members", split, "--nonmembers", split, "--attacks", "baseline-norm",
                       "--out", str(out), "--device", "cpu", "--repeats", "1")
    assert code == 0, err
    return json.loads((out / "report.json").read_text())


def test_train_writes_weights_export_model_card_and_split(trained):
    for name in ("encoder.safetensors", "encoder.torchscript.pt", "model.json", "split.json"):
        assert (trained / name).is_file(), name

    model = json.loads((trained / "model.json").read_text())
    assert model["arch"] == "resnet-tiny"
    assert model["n_members"] == 40 and model["n_nonmembers"] == 40
    assert len(model["loss_history"]) == 1 and math.isfinite(model["loss_history"][0])
    util = model["utility"]
    for key in ("knn_accuracy", "linear_probe_accuracy"):
        assert 0.0 <= util[key] <= 1.0, util

    split = json.loads((trained / "split.json").read_text())
    assert split["format"] == "leakprobe-split/1"
    assert split["data"] == "synthetic:80" and split["image_size"] == 32
    assert len(split["members"]) == 40 and len(split["nonmembers"]) == 40
    mem = {e["sha256"] for e in split["members"]}
    non = {e["sha256"] for e in split["nonmembers"]}
    assert len(mem) == 40 and len(non) == 40  # no duplicate image within a side
    assert not mem & non
    ids = [e["id"] for e in split["members"] + split["nonmembers"]]
    assert len(set(ids)) == 80


def test_split_manifest_reloads_the_images_it_names(trained):
    from leakprobe.data.splits import load_images

    manifest = json.loads((trained / "split.json").read_text())
    for side in ("members", "nonmembers"):
        images = load_images(trained / "split.json", 32, side=side)
        assert images.ids == [e["id"] for e in manifest[side]]
        assert images.content_hashes() == [e["sha256"] for e in manifest[side]]


def test_audit_of_the_torchscript_export(reference):
    assert reference["kind"] == "encoder-membership"
    assert reference["context"]["tokens_exposed"] is True  # the export keeps `tokens`
    names = [r["attack"] for r in reference["results"]]
    assert names == ["baseline-norm", "blind"]
    for r in reference["results"]:
        assert r["n_members"] == 40 and r["n_nonmembers"] == 40


@pytest.mark.parametrize("form", [("",), ("encoder.safetensors",),
                                  ("encoder.safetensors", "--arch", "resnet-tiny")],
                         ids=["folder", "safetensors-recorded-arch", "safetensors-explicit-arch"])
def test_other_model_forms_give_the_same_audit(trained, reference, tmp_path, form):
    name, *extra = form
    model = str(trained / name) if name else str(trained)
    split = str(trained / "split.json")
    code, _, err = cli("audit", "encoder", "--model", model, *extra, "--members", split,
                       "--nonmembers", split, "--attacks", "baseline-norm", "--out",
                       str(tmp_path / "a"), "--device", "cpu", "--repeats", "1")
    assert code == 0, err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    got, want = report["results"][0], reference["results"][0]
    assert got["attack"] == want["attack"] == "baseline-norm"
    assert got["samples"]["ids"] == want["samples"]["ids"]
    # same weights, same images: eager safetensors model == TorchScript export
    np.testing.assert_allclose(got["samples"]["score"], want["samples"]["score"], rtol=1e-4,
                               atol=1e-5)
    assert got["metrics"]["auc"] == pytest.approx(want["metrics"]["auc"], abs=1e-9)


def test_weights_of_another_architecture_are_refused(trained, tmp_path):
    split = str(trained / "split.json")
    out = tmp_path / "a"
    code, _, err = cli("audit", "encoder", "--model", str(trained / "encoder.safetensors"),
                       "--arch", "resnet18-cifar", "--members", split, "--nonmembers", split,
                       "--attacks", "baseline-norm", "--out", str(out), "--device", "cpu")
    assert code == 2, err
    assert "do not fit" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "report.json").exists()


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    folder = tmp_path / "resumed"
    shutil.copytree(trained, folder)
    ckpt_path = folder / "checkpoints" / "checkpoint.pt"
    state = torch.load(ckpt_path, weights_only=True)
    assert state["epoch"] == 1
    # mark the checkpoint's history: a run that resumes carries it over, a fresh one cannot
    state["history"] = [123.25]
    torch.save(state, ckpt_path)

    code, _, err = cli(*TRAIN, "--arch", "resnet-tiny", "--epochs", "2", "--resume", "--out",
                       str(folder))
    assert code == 0, err
    model = json.loads((folder / "model.json").read_text())
    assert len(model["loss_history"]) == 2
    assert model["loss_history"][0] == 123.25
    assert math.isfinite(model["loss_history"][1])
    assert torch.load(ckpt_path, weights_only=True)["epoch"] == 2


def test_vit_tiny_export_has_working_tokens(tmp_path):
    out = tmp_path / "vit"
    code, _, err = cli(*TRAIN, "--arch", "vit-tiny", "--arch-kwargs", '{"depth": 1}',
                       "--epochs", "1", "--out", str(out))
    assert code == 0, err
    model = json.loads((out / "model.json").read_text())
    assert model["arch"] == "vit-tiny" and model["arch_kwargs"]["depth"] == 1

    scripted = torch.jit.load(str(out / "encoder.torchscript.pt"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = scripted.tokens(x)
        emb = scripted(x)
    assert tuple(tokens.shape) == (2, 64, 192)
    assert tuple(emb.shape) == (2, 192)
    assert torch.isfinite(tokens).all()

    # the recorded arch kwargs (depth 1) rebuild the same network from the safetensors file
    from leakprobe.targets.loading import load_encoder

    target = load_encoder(str(out), device="cpu")
    assert target.has_tokens
    torch.testing.assert_close(target.embed(x), emb.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("extra", "word"), [
    (["--batch-size", "0"], "batch"),
    (["--arch-kwargs", '{"no_such_option": 1}'], "no_such_option"),
], ids=["batch-size-0", "unknown-arch-kwarg"])
def test_bad_train_options_give_one_line_and_exit_2(tmp_path, extra, word):
    code, _, err = cli("train", "encoder", "--arch", "resnet-tiny", "--data", "synthetic:40",
                       "--members", "20", "--epochs", "1", "--device", "cpu", *extra, "--out",
                       str(tmp_path / "t"))
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: ") and word in err
