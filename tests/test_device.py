"""`resolve_device`: the devices leakprobe runs on, and one-line errors naming the others."""

from __future__ import annotations

import pytest
import torch

from leakprobe.device import resolve_device
from leakprobe.errors import LeakprobeError


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(("name", "what"), [
    ("gpu", "unknown device"), ("mps", "not supported"), ("cuda:x", "unknown device"),
    ("cuda:-1", "unknown device"), ("", "unknown device"), ("tpu", "unknown device"),
])
def test_other_devices_are_named_in_one_line(name, what):
    with pytest.raises(LeakprobeError) as info:
        resolve_device(name)
    assert str(info.value) == f"--device {name}: {what}; use auto, cpu, cuda or cuda:N"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda(name):
    with pytest.raises(LeakprobeError, match=f"^--device {name}: CUDA is not available"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_this_machine_lacks():
    n = torch.cuda.device_count()
    assert resolve_device(f"cuda:{n - 1}") == torch.device(f"cuda:{n - 1}")
    with pytest.raises(LeakprobeError, match=f"has {n} CUDA device"):
        resolve_device(f"cuda:{n}")
