"""Saving models: safetensors weights with their architecture, and TorchScript exports."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from leakprobe.io import atomic_write


def save_weights(model: nn.Module, path: str | Path, arch: str, arch_kwargs: dict) -> Path:
    """Write the state dict as safetensors with ``arch`` and its kwargs in the metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": arch, "arch_kwargs": json.dumps(arch_kwargs), "format": "leakprobe/1"}
    return atomic_write(path, lambda p: save_file(state, str(p), metadata=meta))


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Script the model (``forward`` and its exported ``tokens``) and save it atomically."""
    model = model.cpu().eval()
    scripted = torch.jit.script(model)
    return atomic_write(path, lambda p: scripted.save(str(p)))
