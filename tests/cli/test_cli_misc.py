"""The rest of the CLI: help, `models`, `--debug`, `report`, option errors, shadow knowledge and
IDX data specs.

Behaviour that depends on the process (the console script, tracebacks reaching stderr) runs in
a subprocess; the other commands call the entry point `leakprobe.cli.main` in-process, which
keeps the file fast.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cli_runner import run_cli as cli
from leakprobe.errors import LeakprobeError

ENV = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1",
       "OMP_NUM_THREADS": "1"}
MEMBERS, NONMEMBERS = "synthetic:30:1", "synthetic:30:2"


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).transpose(1, 2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*args: str, module: bool = True) -> subprocess.CompletedProcess:
    if module:
        cmd = [sys.executable, "-m", "leakprobe.cli", *args]
    else:  # the installed console script
        script = Path(sys.executable).parent / "leakprobe"
        if not script.exists():
            pytest.skip("no leakprobe console script next to this interpreter")
        cmd = [str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)




@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("misc") / "tiny.pt"
    torch.manual_seed(0)
    torch.jit.script(TinyEncoder()).save(str(path))
    return str(path)


def audit(model: str, out: Path, *extra: str, members: str = MEMBERS,
          nonmembers: str = NONMEMBERS, attacks: str = "baseline-norm") -> tuple[int, str, str]:
    return cli("audit", "encoder", "--model", model, "--members", members, "--nonmembers",
               nonmembers, "--attacks", attacks, "--out", str(out), "--device", "cpu",
               "--repeats", "1", *extra)


# --------------------------------------------------------------------------------------------
# help and listing


def test_top_level_help_through_the_console_script():
    proc = run("--help", module=False)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "audit", "report", "models"):
        assert command in proc.stdout


@pytest.mark.parametrize(("command", "options"), [
    (["audit", "encoder"], ["--model", "--members", "--nonmembers", "--attacks", "--knowledge",
                            "--shadow-data"]),
    (["train", "encoder"], ["--arch", "--arch-kwargs", "--epochs", "--resume", "--out"]),
])
def test_subcommand_help(command, options):
    code, out, err = cli(*command, "--help")
    assert code == 0, err
    for option in options:
        assert option in out, option


def test_models_lists_architectures_and_methods():
    code, out, err = cli("models")
    assert code == 0, err
    for name in ("resnet18-cifar", "resnet-tiny", "vit-tiny", "simclr"):
        assert name in out, out


def test_models_groups_the_architectures_by_use():
    from leakprobe.models.catalog import GROUPS, SSL_METHODS

    code, out, err = cli("models")
    assert code == 0, err
    titles = [ln.split(":", 1)[0] for ln in out.splitlines() if ln and not ln.startswith(" ")]
    assert titles == [g.title for g in (*GROUPS, SSL_METHODS)]
    sections = dict(zip(titles, out.split("\n\n"), strict=True))
    published = sections["Published checkpoint layouts"]
    assert "--arch NAME" in published and ".pth" in published
    for name in ("resnet50", "vit-small-patch16", "vit-base-patch16"):
        assert f"\n  {name} " in published, name
    assert "hf:DIR" in sections["Hugging Face model types"]
    for model_type in ("dinov2", "vit_mae", "clip_vision_model", "convnext"):
        assert f"\n  {model_type} " in sections["Hugging Face model types"], model_type
    assert "\n  surrogate " in sections["Internal"]  # not among the --arch choices
    assert "\n  surrogate " not in sections["Architectures to train targets"]


def test_attacks_shows_queries_per_image_and_groups_the_calibrated_attacks():
    code, out, err = cli("attacks")
    assert code == 0, err
    header = next(ln for ln in out.splitlines() if ln.startswith("  attack ")
                  and "knowledge" in ln)
    assert "queries/image" in header
    row = next(ln for ln in out.splitlines() if ln.startswith("  partcrop "))
    assert " 129 " in row and "known-subset, shadow" in row
    assert "all 147" in out  # the default set, shared views paid once
    calibrated = out.split("encoder, calibrated against reference encoders")[1].split(
        "\nimage2image:")[0]
    assert "--knowledge reference" in calibrated.splitlines()[0]
    line = next(ln for ln in calibrated.splitlines() if ln.startswith("  encodermi "))
    assert "encodermi-threshold" in line and "lira-encodermi, rmia-encodermi" in line
    assert not any(ln.startswith("  lira-encodermi") for ln in out.splitlines())  # grouped
    rda = next(ln for ln in out.splitlines() if ln.startswith("  rda "))
    assert " 10 " in rda


def _seconds(*args: str) -> float:
    """Wall time of ``leakprobe ARGS`` in a fresh interpreter, best of three."""
    import time

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        proc = run(*args)
        times.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr
    return min(times)


@pytest.mark.parametrize("command", ["models", "attacks"])
def test_listing_commands_load_no_torch_and_answer_fast(command):
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom leakprobe.cli import main\n"
         f"sys.argv = ['leakprobe', {command!r}]\n"
         "try:\n    main()\nexcept SystemExit:\n    pass\n"
         "print('LOADED:' + ','.join(m for m in ('torch', 'transformers', 'sklearn') "
         "if m in sys.modules))"],
        capture_output=True, text=True, env=ENV, timeout=120, check=True)
    assert loaded.stdout.splitlines()[-1] == "LOADED:"
    # tolerant: the best of three runs; a loaded machine slows every run, torch alone takes 2 s
    assert _seconds(command) < 1.5


# --------------------------------------------------------------------------------------------
# --debug


def test_debug_shows_the_traceback_and_plain_mode_does_not(tmp_path):
    args = ["audit", "encoder", "--model", str(tmp_path / "missing.pt"), "--members", MEMBERS,
            "--nonmembers", NONMEMBERS, "--attacks", "baseline-norm", "--out",
            str(tmp_path / "out")]
    debug = run("--debug", *args)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
    assert "no such model file" in debug.stderr

    plain = run(*args)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    assert plain.stderr.startswith("error: ") and "no such model file" in plain.stderr
    assert not (tmp_path / "out" / "report.json").exists()


# --------------------------------------------------------------------------------------------
# report


def test_report_combines_two_audits(model, tmp_path):
    code, _, err = audit(model, tmp_path / "run1", attacks="baseline-norm")
    assert code == 0, err
    code, _, err = audit(model, tmp_path / "run2", "--n-views", "4",
                         attacks="encodermi-threshold")
    assert code == 0, err

    combined = tmp_path / "combined"
    # one run as a folder, one as its report.json
    code, out, err = cli("report", str(tmp_path / "run1"), str(tmp_path / "run2" / "report.json"),
                         "--out", str(combined))
    assert code == 0, err
    html = (combined / "report.html").read_text()
    assert "2 audits" in html
    assert "baseline-norm" in html and "encodermi-threshold" in html
    assert (combined / "r1_roc.png").is_file() and (combined / "r2_roc.png").is_file()
    assert str(combined / "report.html") in out


def test_report_of_a_folder_without_report_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("report", str(tmp_path / "empty"), "--out", str(tmp_path / "x"))
    assert code == 2, err
    assert err.startswith("error: ")
    assert not (tmp_path / "x" / "report.html").exists()


# --------------------------------------------------------------------------------------------
# option errors


def test_unknown_attack_lists_the_known_ones(model, tmp_path):
    code, _, err = audit(model, tmp_path / "a", attacks="baseline-norm,nosuchattack")
    assert code == 2, err
    assert "nosuchattack" in err
    known = err.split("known:", 1)[1]
    for name in ("partcrop", "encodermi-threshold", "encodermi-vector", "lpla-p2",
                 "baseline-norm", "baseline-consistency"):
        assert name in known, err
    assert "Traceback" not in err
    assert not (tmp_path / "a" / "report.json").exists()


def test_shadow_knowledge_needs_shadow_data(model, tmp_path):
    code, _, err = audit(model, tmp_path / "a", "--knowledge", "shadow")
    assert code == 2, err
    assert "--shadow-data" in err
    assert not (tmp_path / "a" / "report.json").exists()


def test_shadow_knowledge_audit(model, tmp_path):
    out = tmp_path / "shadow"
    code, _, err = audit(model, out, "--knowledge", "shadow", "--shadow-data",
                         "synthetic:60:9", "--shadow-epochs", "1", "--n-views", "4",
                         attacks="encodermi-threshold")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["knowledge"] == "shadow"
    assert [r["attack"] for r in report["results"]] == ["encodermi-threshold", "blind"]
    for r in report["results"]:
        assert r["n_members"] == 30 and r["n_nonmembers"] == 30
        assert 0.0 <= r["metrics"]["auc"] <= 1.0
    # the shadow's recipe is the user's and the report says which (issue #12, item 7)
    assert report["context"]["shadow"] == {
        "data": "synthetic:60:9", "method": "simclr", "arch": "resnet-tiny", "epochs": 1,
        "members": 30, "nonmembers": 30, "split_seed": 0}


def test_api_refuses_a_shadow_split_holding_audited_images(model, tmp_path):
    from leakprobe import audit_encoder, load_encoder
    from leakprobe.data.loaders import load_dataset

    target = load_encoder(str(model), device="cpu")
    data = load_dataset("synthetic:60:9", 32, 0)
    members, nonmembers = data.subset(range(30)), data.subset(range(30, 60))
    shadow = (target, members.subset(range(10)), load_dataset("synthetic:20:8", 32, 0))
    with pytest.raises(LeakprobeError, match="shadow data shares 10 images with the target's"):
        audit_encoder(target, members, nonmembers, attacks="baseline-norm", knowledge="shadow",
                      shadow=shadow)


# --------------------------------------------------------------------------------------------
# IDX data specs


def write_idx(folder: Path, n: int, seed: int, prefix: str = "train", gz: bool = False) -> None:
    """MNIST-format files: big-endian magic and sizes, then uint8 pixels / labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    images = np.empty((n, 28, 28), np.uint8)
    for i in range(n):  # a bright disc on noise, somewhere different in each image
        cy, cx, r = rng.integers(6, 22), rng.integers(6, 22), rng.integers(3, 7)
        img = rng.integers(0, 80, size=(28, 28))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
        images[i] = img
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    files = {
        f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes(),
        f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels.tobytes(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


def test_idx_folders_as_members_and_nonmembers(model, tmp_path):
    write_idx(tmp_path / "idx_a", 24, seed=1)
    write_idx(tmp_path / "idx_b", 26, seed=2, gz=True)
    members, nonmembers = f"idx:{tmp_path / 'idx_a'}", f"idx:{tmp_path / 'idx_b'}"
    out = tmp_path / "a"
    code, _, err = audit(model, out, members=members, nonmembers=nonmembers)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    for r in report["results"]:
        assert r["n_members"] == 24 and r["n_nonmembers"] == 26
    assert report["context"]["members"] == members
    assert report["context"]["nonmembers"] == nonmembers


def test_idx_train_and_test_splits_of_one_folder(model, tmp_path):
    folder = tmp_path / "idx"
    write_idx(folder, 22, seed=3, prefix="train")
    write_idx(folder, 21, seed=4, prefix="t10k")
    out = tmp_path / "a"
    code, _, err = audit(model, out, members=f"idx:{folder}:train",
                         nonmembers=f"idx:{folder}:test")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["n_members"] == 22
    assert report["results"][0]["n_nonmembers"] == 21


def test_same_idx_folder_on_both_sides_is_an_overlap_error(model, tmp_path):
    write_idx(tmp_path / "idx_a", 24, seed=1)
    spec = f"idx:{tmp_path / 'idx_a'}"
    code, _, err = audit(model, tmp_path / "a", members=spec, nonmembers=spec)
    assert code == 2, err
    assert "overlap" in err


@pytest.mark.parametrize(("option", "value"), [("--batch-size", "0"), ("--image-size", "0")])
def test_nonpositive_sizes_give_one_line_and_exit_2(model, tmp_path, option, value):
    out = tmp_path / "a"
    code, _, err = audit(model, out, option, value)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: ") and option.strip("-").split("-")[0] in err
    assert not (out / "report.json").exists()


def test_demo_runs_small_and_writes_the_encoder_report(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--members", "24", "--epochs", "2", "--no-families", "--device", "cpu",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "encoder-membership"
    assert {"partcrop", "blind"} <= {r["attack"] for r in report["results"]}
    assert "utility" in report["context"] and (out / "report.html").is_file()
