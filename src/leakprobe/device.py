"""Device choice shared by every command: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

import re

import torch

from leakprobe.errors import LeakprobeError

ACCEPTED = "use auto, cpu, cuda or cuda:N"


def check_device_name(name: str) -> str:
    """``name`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else a one-line error.

    Only the name is checked, not whether this machine has the device (see
    :func:`resolve_device`): a study run on a Ray cluster leaves that to its workers.
    """
    text = str(name).strip()
    low = text.lower()
    if low in ("auto", "cpu") or re.fullmatch(r"cuda(?::\d+)?", low):
        return text
    what = "not supported" if low in ("mps", "xpu", "hip", "xla", "meta") else "unknown device"
    raise LeakprobeError(f"--device {text}: {what}; {ACCEPTED}")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a usable ``torch.device``.

    Anything else (``gpu``, ``mps``, typos) and CUDA devices this machine lacks are refused
    with a one-line :class:`LeakprobeError` naming the device, so commands call this before
    they load a model or data.
    """
    if isinstance(name, torch.device):
        return name
    text = check_device_name(name)  # from here on: auto, cpu, cuda or cuda:N
    low = text.lower()
    if low == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if low == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LeakprobeError(f"--device {text}: CUDA is not available on this machine; "
                             "use auto or cpu")
    count = torch.cuda.device_count()
    index = low.partition(":")[2]
    if index and int(index) >= count:
        raise LeakprobeError(f"--device {text}: this machine has {count} CUDA device(s) "
                             f"(cuda:0 to cuda:{count - 1})")
    return torch.device(low)
