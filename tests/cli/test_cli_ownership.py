"""``leakprobe audit ownership`` end to end on small data, and its refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_runner import run_cli as cli
from leakprobe.evaluation.ownership import OWNERSHIP_TESTS, VERDICTS
from leakprobe.report.schema import load_report

MEMBERS, NONMEMBERS, OTHER = "synthetic:30:1", "synthetic:30:2", "synthetic:40:5"

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPORT_KEYS = ("verdict", "p_value", "alpha", "combination", "tests", "n_members",
               "n_nonmembers", "n_references", "suspect", "victim", "seed",
               "leakprobe_version", "seconds")


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ownership-models")
    paths = {}
    for i, name in enumerate(("victim", "ref1", "ref2")):
        torch.manual_seed(i)
        torch.jit.script(TinyEncoder()).save(str(root / f"{name}.pt"))
        paths[name] = str(root / f"{name}.pt")
    (root / "empty").mkdir()
    paths["empty"] = str(root / "empty")
    paths["root"] = str(root)
    return paths


def ownership(out: Path, *extra: str, suspect: str, members: str = MEMBERS,
              nonmembers: str = NONMEMBERS) -> tuple[int, str, str]:
    return cli("audit", "ownership", "--suspect", suspect, "--members", members,
               "--nonmembers", nonmembers, "--out", str(out), "--device", "cpu", *extra)


def test_torchscript_suspect_with_reference_models(models, tmp_path) -> None:
    out = tmp_path / "own"
    code, stdout, err = ownership(out, "--victim", models["victim"], "--reference-model",
                                  models["ref1"], "--reference-model", models["ref2"],
                                  "--alpha", "0.05", "--n-views", "4",
                                  suspect=models["victim"])
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert all(k in report for k in REPORT_KEYS)
    assert report["kind"] == "encoder-ownership" and report["combination"] == "holm"
    assert report["verdict"] in VERDICTS and report["alpha"] == 0.05
    assert (report["n_members"], report["n_nonmembers"], report["n_references"]) == (30, 30, 2)
    assert report["suspect"] == models["victim"] and report["victim"] == models["victim"]
    assert [t["name"] for t in report["tests"]] == list(OWNERSHIP_TESTS)
    by_name = {t["name"]: t for t in report["tests"]}
    for name in ("calibrated-membership", "calibrated-isolation", "similarity-cka",
                 "similarity-procrustes"):
        t = by_name[name]
        assert t["ran"] and 0 < t["p_value"] <= 1 and t["references"] == 2
    assert by_name["similarity-cka"]["statistic"] == pytest.approx(1.0)  # itself
    assert by_name["similarity-cka"]["min_p"] == pytest.approx(1 / 3)
    assert not by_name["similarity-cka"]["combined"]  # 1/3 can never reach 0.05
    assert not by_name["dataset-inference"]["ran"]
    assert "needs >= 200 members" in by_name["dataset-inference"]["skipped"]
    assert report["combined_tests"] == ["calibrated-membership", "calibrated-isolation"]
    assert report["holm_k"] == 2
    assert any("smallest p-value is 1/(R+1) = 0.333" in n for n in report["notes"])
    assert load_report(out / "report.json")["verdict"] == report["verdict"]
    # terminal and page say the same in one line, the page first thing after its title
    line = report["summary"]
    assert line.startswith(report["verdict"] + ":") and line in stdout.splitlines()
    page = (out / "report.html").read_text()
    assert page.index(line.split(":")[0] + ":") < page.index("<h3>Tests</h3>")
    code, _, err = cli("report", str(out / "report.json"), "--out", str(tmp_path / "merged"))
    assert code == 0, err


def test_trained_references_are_cached_and_a_train_folder_can_be_the_suspect(
        models, tmp_path) -> None:
    refs = tmp_path / "refs"
    first = ("--reference-data", OTHER, "--references", "2", "--reference-epochs", "1",
             "--reference-dir", str(refs), "--n-views", "3", "--tests",
             "calibrated-membership")
    code, _, err = ownership(tmp_path / "a", *first, suspect=models["victim"])
    assert code == 0, err
    folders = sorted(p for p in refs.iterdir() if p.is_dir())
    assert len(folders) == 2
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["references"]["source"] == "trained" and report["n_references"] == 2
    assert [t["name"] for t in report["tests"]] == ["calibrated-membership"]
    # a reference's folder is a train folder: audit it, reusing the cached references
    code, _, err = ownership(tmp_path / "b", *first, suspect=str(folders[0]))
    assert code == 0, err
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert again["references"]["trained_now"] == 0
    assert again["tests"][0]["ran"]


@pytest.fixture
def no_work(monkeypatch):
    """Reference training and every encoder query raise: each check must come first."""
    import leakprobe.targets.encoder
    import leakprobe.workflows.references

    def forbid(*_args, **_kwargs):
        raise AssertionError("expensive work started before the pre-flight checks")

    monkeypatch.setattr(leakprobe.workflows.references, "train_references", forbid)
    monkeypatch.setattr(leakprobe.targets.encoder.ModuleEncoder, "embed", forbid)


@pytest.mark.parametrize(("case", "message"), [
    ("missing suspect", "no such model file"),
    ("empty members", "no images"),
    ("empty nonmembers", "no images"),
    ("overlap", "members and non-members overlap: 30"),
    ("reference overlap", "the reference data shares 30 images with the target's members"),
    ("alpha 0", "--alpha must lie strictly between 0 and 1, got 0.0"),
    ("alpha 1", "--alpha must lie strictly between 0 and 1, got 1.0"),
    ("alpha 1.5", "--alpha must lie strictly between 0 and 1"),
    ("alpha nan", "--alpha must lie strictly between 0 and 1"),
    ("no references", "needs reference encoders that never saw your data"),
    ("zero references", "--references 0 without --reference-model"),
    ("too few", "members: 10 images; an audit needs at least 20 per side"),
    ("unknown test", "unknown test(s) cka"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(models, tmp_path, no_work, case,
                                                          message) -> None:
    refs: tuple[str, ...] = ("--reference-model", models["ref1"])
    kwargs = {"suspect": models["victim"]}
    extra: tuple[str, ...] = ()
    if case == "missing suspect":
        kwargs["suspect"] = str(Path(models["root"]) / "nope.pt")
    elif case == "empty members":
        kwargs["members"] = models["empty"]
    elif case == "empty nonmembers":
        kwargs["nonmembers"] = models["empty"]
    elif case == "overlap":
        kwargs["nonmembers"] = MEMBERS
    elif case == "reference overlap":
        refs = ("--reference-data", "synthetic:30:1")
    elif case.startswith("alpha"):
        extra = ("--alpha", case.split()[1])
    elif case == "no references":
        refs = ()
    elif case == "zero references":
        refs = ("--reference-data", OTHER, "--references", "0")
    elif case == "too few":
        kwargs["members"] = "synthetic:10:1"
    elif case == "unknown test":
        extra = ("--tests", "cka")
    out = tmp_path / "own"
    code, _, err = ownership(out, *refs, *extra, **kwargs)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not out.exists()
