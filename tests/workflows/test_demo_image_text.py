"""The demo's image-text stage: a small CLIP trained on 64 synthetic pairs, audited, and its
section on the demo's one page."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_image_text_stage_writes_its_report_and_its_section(tmp_path):
    from leakprobe.report.html import render_reports
    from leakprobe.workflows.demo import _demo_image_text

    sections = _demo_image_text(tmp_path / "image-text", 0, "cpu", "off", epochs=1)
    report = json.loads(sections[0].read_text())
    assert report["kind"] == "image-text-membership"
    assert [r["attack"] for r in report["results"]] == [
        "clip-cosine", "clip-rank", "clip-augment", "blind"]
    assert report["context"]["demo"] is True and report["summary"]
    render_reports(sections, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert report["summary"].split(" (")[0] in page and "clip-rank" in page
