"""Shared fixtures of the study tests: a two-cell study (SimCLR none / SCSR 0.5, 2 epochs on
20 + 20 synthetic images, one cheap attack), run once per session."""

from __future__ import annotations

import pytest
from study_helpers import TWO_CELLS

from leakprobe.study import run_study
from leakprobe.study.config import parse_study_config


@pytest.fixture(scope="session")
def study():
    return parse_study_config(TWO_CELLS)


@pytest.fixture(scope="session")
def first_run(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, run_study(study, out)


