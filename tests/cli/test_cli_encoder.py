"""The CLI as a user runs it: a TorchScript encoder unknown to leakprobe, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from leakprobe.data.loaders import save_image_folder
from leakprobe.data.synthetic import make_synthetic

ENV = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1"}


class UserEncoder(nn.Module):
    """Not in leakprobe's registry: a small CNN with a tokens method, as a user would write."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).transpose(1, 2)


class NaNEncoder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * float("nan")


class ImageEcho(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # (B,3,H,W): not an embedding


class Only32(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 3 * 32 * 32)[:, :8]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leakprobe.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = make_synthetic(60, 32, seed=5)
    save_image_folder(data.subset(range(30)), root / "members")
    save_image_folder(data.subset(range(30, 60)), root / "nonmembers")
    torch.manual_seed(0)
    torch.jit.script(UserEncoder()).save(str(root / "user.pt"))
    for name, cls in [("nan", NaNEncoder), ("echo", ImageEcho), ("only32", Only32)]:
        torch.jit.script(cls()).save(str(root / f"{name}.pt"))
    torch.save({"weights": torch.zeros(3)}, root / "pickled.pt")
    (root / "garbage.pt").write_bytes(b"not a model at all")
    (root / "few").mkdir()
    save_image_folder(data.subset(range(10)), root / "few")
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    save_image_folder(data.subset(range(25)), root / "broken")
    first = sorted((root / "broken").rglob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:60])
    return {"root": root}


def test_user_torchscript_encoder_audits_through_the_cli(folders):
    root = folders["root"]
    out = root / "report"
    proc = run("audit", "encoder", "--model", str(root / "user.pt"), "--members",
               str(root / "members"), "--nonmembers", str(root / "nonmembers"),
               "--attacks", "partcrop,encodermi-threshold,lpla-p2,baseline", "--num-parts", "16",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    names = [r["attack"] for r in report["results"]]
    assert names[0] == "partcrop" and "blind" in names
    assert report["kind"] == "encoder-membership" and report["knowledge"] == "known-subset"
    for r in report["results"]:
        assert {"auc", "auc_ci", "balanced_accuracy", "tpr_at_fpr"} <= set(r["metrics"])
        assert r["n_members"] == 30 and r["n_nonmembers"] == 30
    assert report["results"][0]["queries"] == 60 * 17  # 16 parts + the whole image's tokens
    assert (out / "report.html").exists() and (out / "roc.png").exists()


def test_same_seed_gives_the_same_numbers(folders):
    root = folders["root"]
    metrics = []
    for i in range(2):
        out = root / f"seeded{i}"
        proc = run("audit", "encoder", "--model", str(root / "user.pt"), "--members",
                   str(root / "members"), "--nonmembers", str(root / "nonmembers"),
                   "--attacks", "encodermi-vector", "--out", str(out), "--seed", "3")
        assert proc.returncode == 0, proc.stderr
        metrics.append([r["metrics"] for r in json.loads((out / "report.json").read_text())
                        ["results"]])
    assert metrics[0] == metrics[1]


@pytest.mark.parametrize(
    ("model", "members", "nonmembers", "extra", "message"),
    [
        ("garbage.pt", "members", "nonmembers", [], "not a TorchScript"),
        ("pickled.pt", "members", "nonmembers", [], "never unpickles"),
        ("echo.pt", "members", "nonmembers", [], "(B,D)"),
        ("nan.pt", "members", "nonmembers", [], "NaN"),
        ("only32.pt", "members", "nonmembers", ["--image-size", "24"], "rejects"),
        ("user.pt", "members", "members", [], "overlap"),
        ("user.pt", "few", "nonmembers", [], "at least 20"),
        ("user.pt", "empty", "nonmembers", [], "no images"),
        ("user.pt", "broken", "nonmembers", [], ".png"),
        ("missing.pt", "members", "nonmembers", [], "no such model file"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(folders, model, members, nonmembers, extra,
                                             message):
    root = folders["root"]
    out = root / f"bad-{model}-{members}"
    proc = run("audit", "encoder", "--model", str(root / model), "--members",
               str(root / members), "--nonmembers", str(root / nonmembers),
               "--attacks", "baseline-norm", "--out", str(out), *extra)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message.lower() in proc.stderr.lower()
    assert "Traceback" not in proc.stderr
    assert not (out / "report.json").exists()  # nothing written half


def test_views_reach_the_attacks_and_the_report(folders):
    from cli_runner import run_cli

    root = folders["root"]
    out = root / "views"
    code, _, err = run_cli("audit", "encoder", "--model", str(root / "user.pt"), "--members",
                           str(root / "members"), "--nonmembers", str(root / "nonmembers"),
                           "--attacks", "partcrop,encodermi-threshold,baseline-consistency",
                           "--num-parts", "8", "--n-views", "4", "--views", "mae,flip=0",
                           "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    ctx = report["context"]
    assert ctx["views_setting"] == "recipe given (owner's audit): mae,flip=0"
    assert set(ctx["views"]) == {"encodermi-threshold", "baseline-consistency"}
    spec = ctx["views"]["encodermi-threshold"]
    assert spec["crop_scale"] == [0.2, 1.0] and spec["flip_p"] == 0 and spec["jitter_p"] == 0
    params = {r["attack"]: r["params"] for r in report["results"]}
    assert params["encodermi-threshold"]["views"] == "mae,flip=0"
    assert "views" not in params["partcrop"]  # part crops are PartCrop's own method


@pytest.mark.parametrize("command", ["audit", "defend"])
def test_bad_views_give_one_line_and_exit_2_before_any_work(folders, command):
    from cli_runner import run_cli

    root = folders["root"]
    out = root / f"bad-views-{command}"
    if command == "audit":
        args = ["audit", "encoder", "--model", str(root / "user.pt"), "--members",
                str(root / "members"), "--nonmembers", str(root / "nonmembers")]
    else:
        args = ["defend", "encoder", "--defence", "scsr", "--data", "synthetic:60",
                "--members", "30", "--epochs", "1"]
    code, _, err = run_cli(*args, "--views", "simclr,crop-scale=0.5", "--out", str(out))
    assert code == 2, err
    assert err.strip() == "error: views: crop-scale must be LO:HI, got '0.5'"
    assert not out.exists()  # nothing trained, nothing written


def test_dry_run_prints_the_plan_and_queries_nothing(folders):
    from cli_runner import run_cli

    root = folders["root"]
    out = root / "dry"
    code, stdout, stderr = run_cli(
        "audit", "encoder", "--model", str(root / "user.pt"), "--members", str(root / "members"),
        "--nonmembers", str(root / "nonmembers"), "--num-parts", "16", "--out", str(out),
        "--dry-run")
    assert code == 0, stderr
    # all: partcrop 17, encodermi 10 (shared by 3), lpla 3 views, consistency 4, clean 1
    assert "60 images x 35 queries per image = 2100 queries" in stdout
    assert "without sharing" in stdout and "estimated query time" in stdout
    assert "encodermi-vector, encodermi-set, encodermi-threshold" in stdout
    assert "dry run: nothing was trained or queried" in stdout
    assert not (out / "report.json").exists()


def test_a_yaml_spec_runs_the_same_audit_as_the_options(folders, tmp_path):
    from cli_runner import run_cli

    root = folders["root"]
    common = {"model": str(root / "user.pt"), "members": str(root / "members"),
              "nonmembers": str(root / "nonmembers"), "attacks": "lpla-p2,encodermi-threshold",
              "seed": 2}
    code, _, err = run_cli("audit", "encoder", "--model", common["model"], "--members",
                           common["members"], "--nonmembers", common["nonmembers"],
                           "--attacks", common["attacks"], "--seed", "2",
                           "--out", str(tmp_path / "flags"))
    assert code == 0, err
    spec = tmp_path / "audit.yaml"
    spec.write_text("".join(f"{k}: {v}\n" for k, v in {**common,
                                                        "out": str(tmp_path / "yaml")}.items()))
    code, _, err = run_cli("audit", "run", str(spec))
    assert code == 0, err
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("flags", "yaml"))
    assert [r["metrics"] for r in a["results"]] == [r["metrics"] for r in b["results"]]
    assert b["context"]["spec"]["attacks"] == common["attacks"]
    assert b["context"]["query_plan"]["total_queries"] == b["context"]["total_queries"]


@pytest.mark.parametrize(("text", "message"), [
    ("model: m.pt\nmembers: a\nnonmembers: b\nout: o\nattaks: all\n", "unknown option(s) attaks"),
    ("model: m.pt\nmembers: a\n", "missing nonmembers, out"),
    ("model: m.pt\nmembers: a\nnonmembers: b\nout: o\nknowledge: magic\n", "--knowledge"),
    ("model: m.pt\nmembers: a\nnonmembers: b\nout: o\nworkers: 0\n", "--workers"),
    ("[1, 2", "not valid YAML"),
])
def test_bad_yaml_specs_give_one_line_and_exit_2(tmp_path, text, message):
    from cli_runner import run_cli

    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    code, _, err = run_cli("audit", "run", str(spec))
    assert code == 2, err
    assert message in err and "Traceback" not in err
