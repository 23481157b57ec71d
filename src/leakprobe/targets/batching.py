"""Images per model call chosen by the model and the device (``batch_size="auto"``).

A local target given ``batch_size="auto"`` (:class:`~leakprobe.targets.base.TargetBase`)
runs :func:`auto_batch_size` once, after its probe, through its own call path (device,
precision, memory format), on seeded random images that are never counted as queries.

- **CUDA**: a memory probe. The peak memory allocated by one call is measured for
  :data:`CUDA_PROBE` and twice as many images; their difference per image is what one more
  image costs. The batch is the largest power of two whose calls fit
  :data:`CUDA_MEMORY_FRACTION` of the memory still free (free on the device plus what
  torch's allocator holds unused), at most :data:`MAX_BATCH`, at least 1.
- **CPU**: :data:`CPU_BATCH` images, fewer where that many would not fit the memory. A CPU
  gains little from large batches and can lose. Measured on this project's 2-core AMD EPYC
  (AVX2, no native bf16), fp32, 2 threads, images/s by batch size, best of a few calls::

      resnet-tiny @32      1: 649   4: 1268   16: 2231   32: 2684   64: 2977   128: 2543
                         256: 2039   512: 997
      vit-small-p16 @224   1: 9.2    2: 8.1    4: 10.7    8: 11.9   16: 12.3    32: 11.6
                          64: 10.7  128: 9.7

  The old fixed 256 cost resnet-tiny a third of its throughput; 32 is within 10% of the
  best of both (2684 vs 2977, 11.6 vs 12.3), keeps a ViT-S/16 call near 3 s so the
  progress bar moves, and -- unlike a timed search, which this busy machine could not run
  reliably (another process's time slice turned a 2 ms call into 12 ms, and a search picked
  1 image for resnet-tiny) -- gives the same batches, hence bit-identical answers, on every
  run. No element or memory budget picks both optima (64 images of resnet-tiny hold ~49 MB
  of layer outputs, 16 of ViT-S/16 ~620 MB), so memory only caps it: the batch is halved
  while its images' layer outputs (summed over the model's modules on the probe, an upper
  bound of what a call holds) exceed :data:`CPU_MEMORY_FRACTION` of the available memory.

Either way the batch is for images of the input size: a query of smaller images gets as
many more per call as they are smaller (:meth:`TargetBase._chunk_size
<leakprobe.targets.base.TargetBase._chunk_size>`; PartCrop's half-size parts go 128 per
call for a batch of 32). Measured interleaved, best of 3, resnet-tiny at 32 px, 64 images,
1 thread beside other jobs: PartCrop (K=128) 1588 queries/s with ``auto`` against 1556 with
the old fixed 256, EncoderMI (n=10) 373 against 330.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from leakprobe.errors import LeakprobeError

if TYPE_CHECKING:  # torch is imported where a batch is measured: the CLI parses without it
    import torch

AUTO = "auto"
MAX_BATCH = 256  # the commands' former fixed batch: never more images in one call
CUDA_PROBE = 4  # images in the smaller CUDA probe call (the larger has twice as many)
CUDA_MEMORY_FRACTION = 0.5  # of the free device memory a call may take
CPU_BATCH = 32  # within 10% of the measured best of resnet-tiny @32 and ViT-S/16 @224
CPU_MEMORY_FRACTION = 0.25  # of the available memory one call's layer outputs may take


def check_batch_size(value: int | str, what: str = "batch size") -> int | str:
    """``"auto"`` or a positive int (an int-like string is converted); else a one-line error."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            value = int(text)
        except ValueError:
            raise LeakprobeError(f"{what} must be 'auto' or a positive integer, "
                                 f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LeakprobeError(f"{what} must be 'auto' or a positive integer, got {value!r}")
    return value


def fixed_batch(value: int | str, default: int) -> int:
    """``value`` as an int, ``default`` for ``"auto"``: for what measures no model (HTTP
    services, whose ``max_batch`` caps it; Python callables)."""
    checked = check_batch_size(value)
    return default if checked == AUTO else int(checked)


def pow2_floor(n: float) -> int:
    """The largest power of two <= ``n`` (1 for anything below 2)."""
    return 1 << (max(int(n), 1).bit_length() - 1)


def batch_for_memory(per_image: float, free: float, *, fraction: float = CUDA_MEMORY_FRACTION,
                     cap: int = MAX_BATCH) -> int:
    """The largest power of two of images costing ``per_image`` bytes within ``fraction``
    of ``free`` bytes, between 1 and ``cap``."""
    if per_image <= 0:
        return cap
    return max(1, min(cap, pow2_floor(fraction * free / per_image)))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _images(n: int, side: int, device: torch.device) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(n)
    return torch.rand(n, 3, side, side, generator=g).to(device)


def _cuda_batch(call: Callable[[torch.Tensor], object], side: int, device: torch.device,
                cap: int) -> int:
    import torch

    peaks = []
    try:
        for n in (CUDA_PROBE, 2 * CUDA_PROBE):
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            out = call(_images(n, side, device))
            torch.cuda.synchronize(device)
            del out
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return 1
    # one more image costs the difference; never less than a quarter of the mean (rounding)
    per_image = max((peaks[1] - peaks[0]) / CUDA_PROBE, peaks[1] / (2 * CUDA_PROBE) / 4)
    free, _ = torch.cuda.mem_get_info(device)
    unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return batch_for_memory(per_image, free + unused, cap=cap)


def layer_output_bytes(module: object, call: Callable[[torch.Tensor], object], side: int,
                       device: torch.device) -> float | None:
    """Bytes of every module's output summed over one call, per image (None: not a torch
    module whose modules take hooks, e.g. TorchScript or a Python callable)."""
    import torch

    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return None
    total = [0]

    def count(_module, _inputs, out) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    handles = [m.register_forward_hook(count) for m in module.modules()]
    try:
        call(_images(2, side, device))
    except Exception:  # the probe passed: a hook-related failure only loses the estimate
        return None
    finally:
        for h in handles:
            h.remove()
    return total[0] / 2


def auto_batch_size(
    call: Callable[[torch.Tensor], object],
    *,
    input_size: int,
    device: torch.device,
    module: object = None,
    cap: int = MAX_BATCH,
) -> int:
    """Images per call for a model on ``device`` (see the module docstring for the rule).

    Args:
        call: one model call on a (B, 3, S, S) batch on ``device``, as the target makes it
            (inference mode, precision, memory format).
        input_size: S, the side of the images measured.
        device: where the model runs (CUDA: memory probe; anything else: :data:`CPU_BATCH`
            within the memory).
        module: the torch module behind ``call`` (CPU: its layer outputs are counted).
        cap: the largest batch returned.
    Returns:
        A power of two between 1 and ``cap``.
    """
    if device.type == "cuda":
        return _cuda_batch(call, input_size, device, cap)
    batch = min(CPU_BATCH, cap)
    per_image = layer_output_bytes(module, call, input_size, device)
    memory = available_memory()
    if per_image and memory:
        batch = batch_for_memory(per_image, memory, fraction=CPU_MEMORY_FRACTION, cap=batch)
    return batch
