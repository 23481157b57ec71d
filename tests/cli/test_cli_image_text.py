"""`train image-text` then `audit image-text` as a user runs them; bad input fails fast."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_cli as cli
from leakprobe.report.schema import load_report

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--permutations", "9", "--n-views", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`train image-text` on 48 synthetic captioned images (24 members), 2 epochs."""
    out = tmp_path_factory.mktemp("clip")
    code, stdout, err = cli("train", "image-text", "--data", "synthetic:48", "--members", "24",
                            "--epochs", "2", "--batch-size", "8", "--image-size", "16",
                            "--embed-dim", "16", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert f"weights: {out / 'image_text.safetensors'}" in stdout
    return out


def audit_args(trained, *extra: str) -> list[str]:
    return ["audit", "image-text", "--model", str(trained), "--members",
            str(trained / "members.json"), "--nonmembers", str(trained / "nonmembers.json"),
            *FAST, *extra]


def test_train_then_audit_writes_the_report(trained, tmp_path):
    meta = json.loads((trained / "model.json").read_text())
    assert meta["kind"] == "image-text" and meta["n_members"] == 24
    out = tmp_path / "report"
    code, stdout, err = cli(*audit_args(trained, "--attacks", "all", "--out", str(out)))
    assert code == 0, err
    report = load_report(out / "report.json")
    assert report["kind"] == "image-text-membership"
    assert [r["attack"] for r in report["results"]] == [
        "clip-cosine", "clip-rank", "clip-augment", "clip-augment-mean", "blind"]
    assert report["context"]["model"] == str(trained)
    assert report["context"]["total_queries"] == 48 * (1 + 5) + 48 * 2 * 2
    assert (out / "report.html").is_file()
    assert "clip-rank" in stdout and stdout.splitlines()[0] == report["summary"]


def test_images_resolve_against_images_and_population_joins_the_pool(trained, tmp_path):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for side in ("members", "nonmembers"):
        (moved / f"{side}.json").write_text((trained / f"{side}.json").read_text())
    out = tmp_path / "r"
    code, _, err = cli("audit", "image-text", "--model", str(trained),
                       "--members", str(moved / "members.json"),
                       "--nonmembers", str(moved / "nonmembers.json"),
                       "--images", str(trained), "--population", "synthetic:8:7",
                       "--attacks", "clip-rank", "--out", str(out), *FAST)
    assert code == 0, err
    ctx = load_report(out / "report.json")["context"]
    assert ctx["population_captions"] == 8 * 5 and ctx["population"] == "synthetic-captions:8:7"


@pytest.mark.parametrize("problem, message", [
    ("no-captions", "has no caption"),
    ("missing-image", "does not exist"),
    ("overlap", "members and non-members overlap"),
    ("budget", "the target's budget allows 100"),
    ("attack", "unknown image-text attack 'clip-cosin'"),
])
def test_bad_input_fails_in_one_line_before_anything_is_written(trained, tmp_path, problem,
                                                                 message):
    members = trained / "members.json"
    nonmembers = trained / "nonmembers.json"
    extra: list[str] = []
    doc = json.loads(members.read_text())
    if problem == "no-captions":
        doc["annotations"] = [a for a in doc["annotations"]
                              if a["image_id"] != doc["images"][0]["id"]]
    elif problem == "missing-image":
        doc["images"][0]["file_name"] = "images/nowhere.png"
    elif problem == "overlap":
        nonmembers = members
    elif problem == "budget":
        extra = ["--budget", "100"]
    else:
        extra = ["--attacks", "clip-cosine,clip-cosin"]
    bad = tmp_path / "members.json"
    bad.write_text(json.dumps(doc))
    out = tmp_path / "report"
    code, stdout, err = cli("audit", "image-text", "--model", str(trained),
                            "--members", str(bad), "--nonmembers", str(nonmembers),
                            "--images", str(trained), "--out", str(out), *FAST, *extra)
    assert code == 2, (problem, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not out.exists() and stdout == ""


def test_the_attack_listing_shows_the_family():
    code, stdout, _ = cli("attacks")
    assert code == 0
    assert "image-text: membership inference on image-text models" in stdout
    for name in ("clip-cosine", "clip-rank", "clip-augment", "clip-augment-mean"):
        assert f"  {name} " in stdout


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory):
    """Another small CLIP, trained on the attacker's own data (another seed): a reference
    the user brings."""
    out = tmp_path_factory.mktemp("given")
    code, _, err = cli("train", "image-text", "--data", "synthetic:16:9", "--members", "8",
                       "--epochs", "1", "--batch-size", "8", "--image-size", "16",
                       "--embed-dim", "16", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    return out


def test_reference_knowledge_trains_references_and_takes_given_ones(trained, reference_model,
                                                                    tmp_path):
    out = tmp_path / "report"
    args = audit_args(trained, "--knowledge", "reference", "--reference-data",
                      "synthetic:24:7", "--references", "2", "--reference-epochs", "1",
                      "--reference-model", str(reference_model), "--population-samples",
                      "8", "--out", str(out))
    code, stdout, err = cli(*args)
    assert code == 0, err
    report = load_report(out / "report.json")
    assert report["knowledge"] == "reference"
    assert [r["attack"] for r in report["results"]] == [
        "clip-cosine", "clip-rank", "clip-augment-mean", "lira-clip-cosine",
        "rmia-clip-cosine", "lira-clip-augment-mean", "rmia-clip-augment-mean", "blind"]
    refs = report["context"]["references"]
    assert refs["count"] == 3 and refs["source"] == "trained+given"
    assert refs["models"] == [str(reference_model)]
    assert len(list((out / "references").glob("reference-*"))) == 2
    assert refs["trained_now"] == 2
    # the same command again reuses the trained references
    code, _, err = cli(*args)
    assert code == 0, err
    assert load_report(out / "report.json")["context"]["references"]["trained_now"] == 0


@pytest.mark.parametrize("extra, message", [
    (["--knowledge", "reference"], "needs --reference-data"),
    (["--reference-data", "synthetic:24:7"], "need --knowledge reference"),
    (["--knowledge", "reference", "--reference-data", "MEMBERS"], "reference data shares"),
    (["--knowledge", "reference", "--reference-data", "synthetic:24:7", "--attacks",
      "clip-augment"], "clip-augment fit on known samples"),
    (["--attacks", "lira-clip-cosine"], "need --knowledge reference"),
])
def test_bad_reference_settings_fail_before_anything_trains(trained, tmp_path, extra, message):
    extra = [str(trained / "members.json") if e == "MEMBERS" else e for e in extra]
    out = tmp_path / "report"
    code, stdout, err = cli(*audit_args(trained, *extra, "--out", str(out)))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists() and stdout == ""
