"""Mixed precision chosen per device: bf16 autocast only where the hardware runs it natively.

``--amp auto`` (the default of every command that trains) turns bf16 autocast on where the
device computes bf16 natively -- CUDA devices with bf16 support, CPUs that report AVX512-BF16
or AMX-BF16 (x86) or the BF16 extension (Arm) -- and off elsewhere. On a CPU without native
bf16 (an AMD EPYC without AVX-512, say) autocast emulates bf16 in software: a resnet-tiny
training step measured 58.5 ms/image under bf16 against 5.9 ms/image in fp32, and oneDNN has
no bf16 LSTM there (``could not create a primitive descriptor for the LSTM forward
propagation primitive``). A model whose ops fail under autocast falls back to fp32 once, with
one line saying so (:class:`leakprobe.training.trainer.Trainer`).

Queries to an audited target always run in fp32: an audit measures the model as it answers,
not a rounded copy of it. ``--amp`` governs what leakprobe trains (targets, shadows,
surrogates, attack extractors).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from leakprobe.errors import LeakprobeError

AMP_CHOICES = ("auto", "on", "off")


@functools.cache
def _cpu_native_bf16() -> bool:
    caps: dict = {}
    with contextlib.suppress(AttributeError, RuntimeError):
        caps = dict(torch.cpu.get_capabilities())  # torch >= 2.5: cpuinfo's feature flags
    if caps.get("avx512_bf16") or caps.get("amx_bf16"):
        return True
    try:  # Arm: the 'bf16' feature of /proc/cpuinfo (e.g. Graviton3, Neoverse V1/V2)
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.lower().startswith("features") and " bf16" in f" {line.split(':', 1)[-1]}"
               for line in text.splitlines())


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (the capability probe of ``--amp auto``)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return _cpu_native_bf16()
    return False


def check_amp(amp: str | bool) -> str | bool:
    """``amp`` if it is a bool or one of ``auto``/``on``/``off``; else a one-line error."""
    if isinstance(amp, bool) or amp in AMP_CHOICES:
        return amp
    raise LeakprobeError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")


def resolve_amp(amp: str | bool, device: torch.device) -> bool:
    """bf16 autocast on or off for ``device``: ``on``/``off``/a bool as given, ``auto`` probed."""
    amp = check_amp(amp)
    if isinstance(amp, bool):
        return amp
    if amp == "auto":
        return native_bf16(device)
    return amp == "on"


def precision_name(enabled: bool) -> str:
    """``bf16-autocast`` or ``fp32``: the words the reports use."""
    return "bf16-autocast" if enabled else "fp32"
