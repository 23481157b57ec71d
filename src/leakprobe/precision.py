"""Mixed precision chosen per device: bf16 autocast only where the hardware runs it natively.

``--amp auto`` (the default of every command that trains) turns bf16 autocast on where the
device computes bf16 natively -- CUDA devices with bf16 support, CPUs that report AVX512-BF16
or AMX-BF16 (x86) or the BF16 extension (Arm) -- and off elsewhere. On a CPU without native
bf16 (an AMD EPYC without AVX-512, say) autocast emulates bf16 in software: a resnet-tiny
training step measured 58.5 ms/image under bf16 against 5.9 ms/image in fp32, and oneDNN has
no bf16 LSTM there (``could not create a primitive descriptor for the LSTM forward
propagation primitive``). A model whose ops fail under autocast falls back to fp32 once, with
one line saying so (:class:`leakprobe.training.trainer.Trainer`).

``--amp`` governs what leakprobe trains (targets, shadows, surrogates, attack extractors).
``--query-precision auto|fp32|bf16`` governs the queries to an audited local target
(:class:`leakprobe.targets.base.TargetBase`): ``auto`` (the default of :func:`load_target`)
runs them under bf16 autocast where the device computes bf16 natively and in fp32 elsewhere;
answers always come back as float32. bf16 rounds what the model computes, so an audit in bf16
measures a slightly rounded copy of the model. Measured (``benchmarks/precision.py
--queries``, seeds 0 and 1) on the demo-like target -- SimCLR resnet-tiny without projection
head, 600 epochs on 64 synthetic images, audited on its 64 members and 64 non-members with
partcrop, encodermi (vector, set, threshold), lpla (p1, p2, pinf) and both baselines -- the
largest AUC difference bf16 - fp32 was 0.0073 (partcrop; every other attack <= 0.0014), the
embeddings moving by 0.3% (relative L2). The stated tolerance, :data:`QUERY_AUC_TOLERANCE`,
is 0.02. ViT-S/16 at 224 px (random weights) moved its embeddings by at most 0.7%. On a CPU
without native bf16 autocast is emulated: resnet-tiny answered 78-100 instead of 650-750
images/s, ViT-S/16 0.56 instead of 4.7 (1 thread), which is why ``auto`` keeps fp32 there.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from leakprobe.errors import LeakprobeError

AMP_CHOICES = ("auto", "on", "off")
QUERY_PRECISIONS = ("auto", "fp32", "bf16")
#: The largest AUC difference between bf16 and fp32 queries an audit is expected to show (the
#: stated tolerance of ``--query-precision``): 0.0073 measured at most (module docstring).
QUERY_AUC_TOLERANCE = 0.02


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


def check_query_precision(value: str) -> str:
    """``value`` if it is one of ``auto``/``fp32``/``bf16``; else a one-line error."""
    if value in QUERY_PRECISIONS:
        return value
    raise LeakprobeError(f"--query-precision must be one of {', '.join(QUERY_PRECISIONS)}, "
                         f"got {value!r}")


def resolve_query_precision(value: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: the precision of the queries to a target on ``device``.

    ``auto`` is ``bf16`` only where :func:`native_bf16` says the device computes it in
    hardware; ``fp32`` and ``bf16`` are kept as given.

    Raises:
        LeakprobeError: a value other than ``auto``, ``fp32``, ``bf16`` (naming
            ``--query-precision``).
    """
    value = check_query_precision(value)
    if value == "auto":
        return "bf16" if native_bf16(torch.device(device)) else "fp32"
    return value


def precision_name(enabled: bool) -> str:
    """``bf16-autocast`` or ``fp32``: the words the reports use."""
    return "bf16-autocast" if enabled else "fp32"
