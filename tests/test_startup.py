"""`import leakprobe` and `leakprobe --help` start without torch (was 3-12 s, now ~0.1-0.5 s)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import leakprobe


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def test_import_and_help_do_not_load_heavy_libraries() -> None:
    heavy = ("torch", "sklearn", "matplotlib", "scipy", "numpy")
    loaded = _run(
        "import sys, leakprobe, leakprobe.cli as c\n"
        "for argv in (['--help'], ['audit', 'encoder', '--help'], ['train', '--help']):\n"
        "    sys.argv = ['leakprobe', *argv]\n"
        "    try:\n"
        "        c.main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print('LOADED:' + ','.join(m for m in {heavy!r} if m in sys.modules))"
    ).splitlines()[-1]
    assert loaded == "LOADED:"


@pytest.mark.parametrize("name", leakprobe.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(leakprobe, name) is not None
    assert name in dir(leakprobe)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        leakprobe.nope  # noqa: B018
