"""The ``encoder-ownership`` report: its keys, its one line, its page, and load_report."""

from __future__ import annotations

import html
import json

import pytest

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.ownership import OwnershipTest, combine_tests
from leakprobe.report.ownership import (
    build_ownership_report,
    verdict_line,
    write_ownership_report,
)
from leakprobe.report.schema import load_report


def _report(p: float = 0.001, suspect: str = "<b>suspect</b>.pt") -> dict:
    tests = [OwnershipTest(name="calibrated-membership", statistic=0.8, p_value=p,
                           references=4, details={"statistic_name": "AUC"}),
             OwnershipTest(name="similarity-cka", statistic=0.9, p_value=0.2, references=4,
                           min_p=0.2),
             OwnershipTest.skip("dataset-inference", "needs >= 200 members")]
    return build_ownership_report(
        tests=tests, combination=combine_tests(tests, alpha=0.01), alpha=0.01, n_members=64,
        n_nonmembers=64, n_references=4, suspect=suspect, victim="victim.pt", seed=0,
        seconds=1.5)


def test_keys_and_the_verdict_line() -> None:
    r = _report()
    assert r["kind"] == "encoder-ownership" and r["verdict"] == "derived"
    assert r["p_value"] == pytest.approx(0.001) and r["combined_tests"] == [
        "calibrated-membership"]
    cka = r["tests"][1]
    assert not cka["combined"] and "cannot reach alpha" in cka["not_combined"]
    assert r["tests"][2]["ran"] is False and r["tests"][2]["skipped"]
    assert r["summary"] == verdict_line(r)
    assert verdict_line(r).startswith("derived: combined p = 0.001 <= alpha = 0.01")
    assert any("1/(R+1) = 0.2" in n and "R >= 99" in n for n in r["notes"])
    weak = _report(p=0.2)
    assert weak["verdict"] == "not shown"
    assert "does not show independence" in verdict_line(weak)


def test_written_report_loads_and_its_page_escapes(tmp_path) -> None:
    paths = write_ownership_report(_report(), tmp_path)
    loaded = load_report(paths["json"])
    assert loaded["verdict"] == "derived"
    page = paths["html"].read_text()
    assert "<b>suspect</b>" not in page and "&lt;b&gt;suspect&lt;/b&gt;" in page
    assert page.index("derived: combined p") < page.index("<h3>Tests</h3>")
    body = page[page.index("</h1>") + 5:]  # the summary is the first line under the title
    assert body.startswith(f'<p class="verdict leakage">{html.escape(loaded["summary"])}</p>')
    assert page.index("<details") < page.index("<h3>Setting</h3>")
    broken = json.loads(paths["json"].read_text())
    del broken["verdict"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(LeakprobeError, match="lacks key\\(s\\) verdict"):
        load_report(tmp_path / "broken.json")
