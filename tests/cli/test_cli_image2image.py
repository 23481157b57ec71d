"""`train image2image` / `audit image2image` as a user runs them, HTTP included, bad input."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

from leakprobe.cli import main

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "serve"))
from serve_helpers import running  # noqa: E402


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["leakprobe", *args])
    monkeypatch.setenv("LEAKPROBE_QUIET", "1")
    monkeypatch.setenv("LEAKPROBE_PROGRESS", "0")
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("i2i")
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["leakprobe", "train", "image2image", "--task", "segment", "--data",
                             "synthetic:60", "--members", "30", "--epochs", "2",
                             "--batch-size", "15", "--out", str(out)])
    mp.setenv("LEAKPROBE_QUIET", "1")
    try:
        main()
    except SystemExit as e:
        assert not e.code
    finally:
        mp.undo()
    return out


def test_segmentation_target_trains_and_audits(trained, monkeypatch, capsys, tmp_path):
    meta = json.loads((trained / "model.json").read_text())
    assert meta["task"] == "segment" and meta["num_classes"] == 9
    code, err = cli(monkeypatch, capsys, "audit", "image2image", "--model",
                    str(trained / "translator.torchscript.pt"), "--members",
                    str(trained / "members"), "--nonmembers", str(trained / "nonmembers"),
                    "--num-classes", "9", "--out", str(tmp_path / "r"))
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["kind"] == "image2image-membership"
    assert [r["attack"] for r in report["results"]] == [
        "reconstruction", "predictability", "membership-error"]
    assert report["context"]["pixel_features"]["name"] == "builtin"


def test_audit_through_the_translate_endpoint_equals_local(trained, tmp_path):
    from leakprobe.data.paired import load_paired_folder
    from leakprobe.serving.server import TranslatorService, create_app
    from leakprobe.targets.loading import load_translator
    from leakprobe.workflows.audit import audit_image2image

    local = load_translator(str(trained / "translator.torchscript.pt"), device="cpu")
    mem = load_paired_folder(trained / "members", 32, 9)
    non = load_paired_folder(trained / "nonmembers", 32, 9)
    expected = audit_image2image(local, mem, non, attacks="reconstruction,membership-error",
                                 num_classes=9)
    with running(create_app(TranslatorService(local))) as url:
        remote = audit_image2image(load_translator(url), mem, non,
                                   attacks="reconstruction,membership-error", num_classes=9)
    for a, b in zip(expected["results"], remote["results"], strict=True):
        assert a["metrics"] == b["metrics"]


def _break(folder, how):
    files = sorted((folder / "targets").glob("*.png"))
    if how == "missing":
        files[0].unlink()
    elif how == "label":
        Image.new("L", (32, 32), color=200).save(files[0])


@pytest.mark.parametrize(("how", "extra", "message"), [
    ("missing", [], "targets"),
    ("label", [], "200"),
    ("none", ["--num-classes", "3"], "num_classes=3"),
])
def test_bad_pairs_give_one_line_and_exit_2(trained, monkeypatch, capsys, tmp_path, how, extra,
                                            message):
    import shutil

    members = tmp_path / "members"
    shutil.copytree(trained / "members", members)
    _break(members, how)
    code, err = cli(monkeypatch, capsys, "audit", "image2image", "--model",
                    str(trained / "translator.torchscript.pt"), "--members", str(members),
                    "--nonmembers", str(trained / "nonmembers"),
                    *(extra or ["--num-classes", "9"]), "--out", str(tmp_path / "r"))
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_wrong_output_shape_is_refused(monkeypatch, capsys, tmp_path, trained):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    torch.jit.script(Flat()).save(str(tmp_path / "flat.pt"))
    code, err = cli(monkeypatch, capsys, "audit", "image2image", "--model",
                    str(tmp_path / "flat.pt"), "--members", str(trained / "members"),
                    "--nonmembers", str(trained / "nonmembers"), "--num-classes", "9",
                    "--out", str(tmp_path / "r"))
    assert code == 2 and "(B,C,H,W)" in err
