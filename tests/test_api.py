"""The Python API guide's first snippet (docs/guide/python-api.md), run as written, and the
stable keys of its report."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
from pathlib import Path

import pytest

import leakprobe
from leakprobe.data.splits import load_images, make_split, save_manifest
from leakprobe.data.synthetic import make_synthetic
from leakprobe.training.encoder import EncoderRecipe, train_target_encoder
from leakprobe.training.trainer import TrainConfig

README = Path(__file__).resolve().parents[1] / "docs" / "guide" / "python-api.md"
README_ATTACKS = '"partcrop,encodermi"'
QUICK_ATTACKS = '"encodermi-threshold,baseline-norm"'


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def readme_snippet() -> str:
    """The first python block of the Python API guide."""
    text = README.read_text(encoding="utf-8")
    section = text.split("# Python API", 1)[1]
    match = re.search(r"```python[^\n]*\n(.*?)```", section, re.S)
    assert match, "the Python API guide has no python block"
    return match.group(1)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> dict:
    """Train runs/t1 with the Python API, then run the guide's snippet in the same folder."""
    root = tmp_path_factory.mktemp("api")
    split = make_split(make_synthetic(80), 40)
    config = TrainConfig(epochs=1, batch_size=20, device="cpu")
    paths = train_target_encoder(split, EncoderRecipe(), config, root / "runs" / "t1")
    assert paths["torchscript"] == root / "runs" / "t1" / "encoder.torchscript.pt"

    code = readme_snippet()
    assert README_ATTACKS in code  # the snippet this test was written against
    code = code.replace(README_ATTACKS, QUICK_ATTACKS)  # same call, quicker attacks

    namespace: dict = {}
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)  # the snippet's paths are relative (runs/t1, runs/py)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(cwd)
    return {"root": root, "ns": namespace, "stdout": out.getvalue()}


def test_snippet_prints_the_first_auc_and_writes_the_report(api_run):
    report = api_run["ns"]["report"]
    printed = float(api_run["stdout"].strip().splitlines()[-1])
    assert printed == pytest.approx(report["results"][0]["metrics"]["auc"])
    out = api_run["root"] / "runs" / "py"
    for name in ("report.json", "report.html", "roc.png"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["results"][0]["metrics"] == report["results"][0]["metrics"]


def test_snippet_loaded_the_manifest_sides(api_run):
    ns = api_run["ns"]
    assert len(ns["members"]) == 40 and len(ns["nonmembers"]) == 40
    assert ns["target"].input_size == 32
    assert not set(ns["members"].content_hashes()) & set(ns["nonmembers"].content_hashes())


def test_report_has_the_stable_keys(api_run):
    report = json.loads((api_run["root"] / "runs" / "py" / "report.json").read_text())
    assert report["leakprobe_version"] == leakprobe.__version__
    assert report["kind"] == "encoder-membership"
    assert report["knowledge"] == "known-subset"
    assert report["seed"] == 0
    names = [r["attack"] for r in report["results"]]
    assert names == ["encodermi-threshold", "baseline-norm", "blind"]
    per_image = report["context"]["queries_per_image"]
    for r in report["results"]:
        assert isinstance(r["params"], dict)
        assert r["n_members"] == 40 and r["n_nonmembers"] == 40
        m = r["metrics"]
        assert 0.0 <= m["auc"] <= 1.0
        lo, hi = m["auc_ci"]
        assert lo <= m["auc"] <= hi
        assert 0.0 <= m["balanced_accuracy"] <= 1.0
        assert set(m["tpr_at_fpr"]) >= {"0.1", "0.01", "0.001"}
        # 40 non-members resolve no FPR level (n0 * f < 10): every TPR is null
        assert all(v is None for v in m["tpr_at_fpr"].values())
        assert isinstance(r["queries"], int)
        assert r["queries"] == 80 * per_image[r["attack"]]
        assert isinstance(r["seconds"], (int, float)) and math.isfinite(r["seconds"])
        assert r["seconds"] >= 0
    assert per_image["baseline-norm"] == 1 and per_image["blind"] == 0
    assert per_image["encodermi-threshold"] == 10  # default views


def test_manifest_of_seeded_synthetic_data_reloads(tmp_path):
    split = make_split(make_synthetic(40, seed=5), 20)
    path = save_manifest(split, tmp_path / "split.json", seed=0)
    members = load_images(path, 32, side="members")
    assert members.content_hashes() == split.members.content_hashes()


def test_every_name_the_guide_python_blocks_import_exists():
    text = README.read_text(encoding="utf-8").split("# Python API", 1)[1]
    blocks = re.findall(r"```python[^\n]*\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    imported = re.findall(r"from leakprobe import \(?([^)]*?)\)?\n\n", "\n".join(blocks) + "\n\n",
                          re.S)
    names = {n.strip() for group in imported for n in group.replace("\n", " ").split(",")}
    names.discard("")
    assert {"defend_encoder", "run_study", "audit_captioner", "DPConfig"} <= names
    missing = sorted(n for n in names if not hasattr(leakprobe, n))
    assert not missing, f"the Python API guide imports names leakprobe lacks: {missing}"
