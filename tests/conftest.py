"""Shared fixtures: seeded small targets trained with the library's own code, cached."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("LEAKPROBE_PROGRESS", "0")
os.environ.setdefault("LEAKPROBE_QUIET", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("leakprobe-cache")
