"""`report.html` as a person sees it: rendered by a real headless browser (Chromium).

The page is copied alone into an empty folder first, so the figures can only come from the
page itself (inlined PNGs), as when the report is sent as one file. Skipped only where no
Chromium binary is installed (`.ci/run` installs Debian's `chromium`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from leakprobe.report.html import write_report
from leakprobe.report.schema import AttackResult, build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH, HEIGHT = 1200, 3200


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
