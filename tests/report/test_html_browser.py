"""`report.html` as a person sees it: rendered by a real headless browser (Chromium).

The page is copied alone into an empty folder first, so the figures can only come from the
page itself (inlined PNGs), as when the report is sent as one file. Skipped only where no
Chromium binary is installed (`.ci/run` installs Debian's `chromium`).

Layout is measured by the browser itself: a copy of the page gets a small script that, once
the page has loaded in a 1280 x 800 window, writes the document's scroll width, every
table's right edge and the verdict's and first table's positions as JSON into the page,
which ``--dump-dom`` then returns. With ``LEAKPROBE_SCREENSHOT_OUT`` set, the 1280 x 800
screenshot of the demo-like page is copied there (the README's docs/images/report.png).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from demo_like import demo_reports

from leakprobe.report.html import render_reports, write_report
from leakprobe.report.schema import AttackResult, build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH, HEIGHT = 1200, 3200
SCREEN = (1280, 800)  # the window a reader opens the report in
SCREENSHOT_ENV = "LEAKPROBE_SCREENSHOT_OUT"


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no Chromium binary found (looked for {', '.join(BROWSERS)})")


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _report() -> dict:
    rng = np.random.default_rng(0)
    n = 120
    member = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    results = [
        AttackResult(attack=name, params={"crops": 8}, scores=rng.normal(size=n) + shift * member,
                     is_member=member, ids=[f"img{i}" for i in range(n)],
                     folds=np.arange(n) % 2, queries=n * 9, seconds=1.5)
        for name, shift in (("partcrop", 1.5), ("encodermi", 0.8), ("blind", 0.0))
    ]
    return build_report("encoder-membership", "known-subset", 0, results,
                        context={"target": "enc.pt", "members": "data/m",
                                 "nonmembers": "data/n"},
                        n_bootstrap=100)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path | str]:
    browser = _browser()
    tmp = tmp_path_factory.mktemp("browser")
    write_report(_report(), tmp / "written")
    alone = tmp / "sent"
    alone.mkdir()
    page = shutil.copy(tmp / "written" / "report.html", alone / "report.html")
    url = Path(page).resolve().as_uri()
    shot = tmp / "screenshot.png"
    _chromium(browser, tmp / "profile", f"--screenshot={shot}",
              f"--window-size={WIDTH},{HEIGHT}", url)
    dom = _chromium(browser, tmp / "profile", "--dump-dom", url).stdout
    return {"screenshot": shot, "dom": dom}


def test_the_browser_shows_tables_and_figures(rendered) -> None:
    from PIL import Image

    shot = rendered["screenshot"]
    assert shot.is_file(), "no screenshot written"
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    ink = (rgb < 235).any(axis=2)
    assert 0.02 < ink.mean() < 0.6, f"{ink.mean():.3f} of the page is not white"
    # the plots' colours (matplotlib's blue lines and bars): nothing else on the page is
    # that blue, so they mark where the figures were drawn
    r, b = rgb[..., 0], rgb[..., 2]
    blue = (b - r > 60) & (b > 120)
    ys, xs = np.nonzero(blue)
    assert blue.sum() > 2000, f"only {blue.sum()} plot-coloured pixels: figures not drawn"
    assert ys.max() - ys.min() > 300 and xs.max() - xs.min() > 300
    # the figures sit below the tables, and the region they span is drawn, not blank
    top = int(ys.min())
    assert top > 600
    assert ink[top:int(ys.max())].mean() > 0.05
    assert ink[:top].mean() > 0.03  # text and tables above the plots


def test_the_dom_has_the_tables_and_inlined_figures(rendered) -> None:
    dom = rendered["dom"]
    assert "Encoder membership inference." in dom
    assert '<table class="metrics">' in dom and "Threat model" in dom
    assert dom.count('<img src="data:image/png;base64,') == 3
    assert 'src="roc.png"' not in dom
    for name in ("partcrop", "encodermi", "blind"):
        assert f"<td>{name}" in dom


# Measures the loaded page and writes the result as JSON into <pre id="layout">. Run twice:
# as the page opens (configuration collapsed) and with every <details> opened.
_MEASURE = """<script>
window.addEventListener("load", function () {
  function measure() {
    var width = window.innerWidth, over = [];
    document.querySelectorAll("table, figure, img, pre, p, ol, h1, h2, .scroll, details")
      .forEach(function (e) {
        var r = e.getBoundingClientRect();
        if (r.width > 0 && r.right > width + 0.5) {
          over.push(e.tagName + "." + e.className + " right " + Math.round(r.right));
        }
      });
    document.querySelectorAll(".scroll").forEach(function (e) {
      if (e.scrollWidth > e.clientWidth + 1) {
        over.push("scrolls: " + e.scrollWidth + " > " + e.clientWidth);
      }
    });
    var table = document.querySelector("table");
    var verdict = document.querySelector("p.verdict, ol.verdicts");
    var row = table && table.rows.length > 1 ? table.rows[1] : table;
    return {innerWidth: width, scrollWidth: document.documentElement.scrollWidth,
            overflowing: over,
            verdictTop: verdict ? verdict.getBoundingClientRect().top + window.scrollY : null,
            verdictBottom: verdict ? verdict.getBoundingClientRect().bottom + window.scrollY
                                   : null,
            tableTop: table ? table.getBoundingClientRect().top + window.scrollY : null,
            firstRowBottom: row ? row.getBoundingClientRect().bottom + window.scrollY : null,
            verdictBeforeTable: !!(verdict && table && (verdict.compareDocumentPosition(table)
                                   & Node.DOCUMENT_POSITION_FOLLOWING))};
  }
  var closed = measure();
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var opened = measure();
  var out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({closed: closed, opened: opened});
  document.body.appendChild(out);
});
</script>"""


def _layout(browser: str, page: Path, profile: Path) -> dict:
    """The measurements of :data:`_MEASURE` for ``page`` in a 1280 x 800 window."""
    probe = page.with_name(page.stem + "_measured.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"),
                     encoding="utf-8")
    dom = _chromium(browser, profile, f"--window-size={SCREEN[0]},{SCREEN[1]}",
                    "--virtual-time-budget=10000", "--dump-dom",
                    probe.resolve().as_uri()).stdout
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def demo_pages(tmp_path_factory) -> dict[str, Path]:
    """The demo-like reports as one page (as `make demo` writes it) and the encoder's alone;
    each page copied alone into an empty folder."""
    browser = _browser()
    tmp = tmp_path_factory.mktemp("demo")
    encoder, image2image, captioner = demo_reports()
    write_report(encoder, tmp / "single")
    with contextlib.chdir(tmp):  # the folders and relative paths `leakprobe demo` writes
        demo = Path("runs/demo")
        jsons = [write_report(r, demo / sub)["json"] for r, sub in
                 ((encoder, ""), (image2image, "image2image"), (captioner, "captioner"))]
        render_reports(jsons, demo)
    pages: dict[str, Path] = {"browser": Path(browser), "tmp": tmp}
    for name, folder in (("single", tmp / "single"), ("demo", tmp / demo)):
        alone = tmp / f"sent_{name}"
        alone.mkdir()
        pages[name] = Path(shutil.copy(folder / "report.html", alone / "report.html"))
    return pages


@pytest.mark.parametrize("name", ["single", "demo"])
def test_verdict_leads_and_nothing_scrolls_sideways_at_1280(demo_pages, name) -> None:
    layout = _layout(str(demo_pages["browser"]), demo_pages[name],
                     demo_pages["tmp"] / f"profile_{name}")
    for state in ("closed", "opened"):  # the configuration collapsed, then opened
        m = layout[state]
        assert m["innerWidth"] == SCREEN[0], m
        assert m["scrollWidth"] <= SCREEN[0], (state, m)
        assert m["overflowing"] == [], (state, m["overflowing"])
    m = layout["closed"]
    # the verdict comes before the first table, in the DOM and on screen ...
    assert m["verdictBeforeTable"] and m["verdictBottom"] <= m["tableTop"], m
    # ... and both are on the first screen: the verdict, the table's head and first row
    assert m["verdictTop"] < 200 and m["firstRowBottom"] <= SCREEN[1], m


def test_verdict_sentence_is_the_first_line_under_the_title(demo_pages) -> None:
    page = demo_pages["single"].read_text(encoding="utf-8")
    summary = html.escape(demo_reports()[0]["summary"], quote=True)
    assert summary.startswith("Leakage detected: 9 of 9 attacks")
    body = page[page.index("</h1>") + len("</h1>"):]
    assert body.startswith(f'<p class="verdict leakage">{summary}</p>')
    assert body.index(summary) < body.index("<table")
    # the configuration is last and collapsed; each view recipe is listed once
    assert page.index("<details") > page.index('<img src="data:image/png')
    assert page.count("blur_sigma") == 2  # two distinct recipes, not one per attack


def test_demo_screenshot_at_1280_by_800(demo_pages) -> None:
    from PIL import Image

    shot = demo_pages["tmp"] / "report_1280x800.png"
    _chromium(str(demo_pages["browser"]), demo_pages["tmp"] / "profile_shot",
              f"--screenshot={shot}", f"--window-size={SCREEN[0]},{SCREEN[1]}",
              demo_pages["demo"].resolve().as_uri())
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert rgb.shape == (SCREEN[1], SCREEN[0], 3)
    ink = (rgb < 235).any(axis=2)
    assert 0.03 < ink.mean() < 0.6, f"{ink.mean():.3f} of the screen is not white"
    # the verdict's red bar (Leakage detected) is drawn on the first screen
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert ((r > 150) & (g < 60) & (b < 60)).sum() > 200
    target = os.environ.get(SCREENSHOT_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
