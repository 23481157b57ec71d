"""Device choice shared by every command: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

import torch

from leakprobe.errors import LeakprobeError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a usable ``torch.device``."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LeakprobeError(f"--device {name}: CUDA is not available on this machine")
    return device
