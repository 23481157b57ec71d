"""Limits of the image pipeline, settable without loading torch (the CLI sets them first).

- The memory cap: the most bytes of images one step may hold whole in memory
  (:func:`set_memory_cap`, ``$LEAKPROBE_MEMORY_CAP`` or ``leakprobe --memory-cap``; default
  half of the machine's RAM). Streamed sets never need it; a step that would hold a set whole
  above it is refused with a one-line error instead of being killed by the kernel.
- The decoding workers: processes that decode image files in parallel
  (:func:`set_data_workers`, ``$LEAKPROBE_DATA_WORKERS`` or ``leakprobe --data-workers``;
  default min(4, CPUs); 0 decodes in the calling process).
"""

from __future__ import annotations

import os
import re

from leakprobe.errors import LeakprobeError

MEMORY_CAP_ENV = "LEAKPROBE_MEMORY_CAP"
WORKERS_ENV = "LEAKPROBE_DATA_WORKERS"

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
_settings: dict[str, int | None] = {}


# ---------------------------------------------------------------------------------------------
# settings: memory cap and decoding workers


def parse_bytes(text: str | int) -> int:
    """``"2GB"``, ``"512MiB"``, ``"1.5g"`` or a plain number of bytes -> bytes (binary units).

    Raises:
        LeakprobeError: not a positive size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
        unit = ""
    else:
        m = _SIZE.match(str(text))
        if m is None or m.group(2).lower().replace("ib", "b") not in _UNITS:
            raise LeakprobeError(f"bad memory size {text!r}: expected e.g. 2GB, 512MB or bytes")
        value, unit = float(m.group(1)), m.group(2).lower().replace("ib", "b")
    n = int(value * _UNITS[unit])
    if n < 1:
        raise LeakprobeError(f"memory size must be positive, got {text!r}")
    return n


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def set_memory_cap(cap: str | int | None) -> None:
    """Cap the bytes of images one step may hold in memory (None: back to the default)."""
    _settings["memory_cap"] = None if cap is None else parse_bytes(cap)


def memory_cap() -> int | None:
    """The cap in bytes: :func:`set_memory_cap`, else ``$LEAKPROBE_MEMORY_CAP``, else half
    the machine's RAM (None where that is unknown)."""
    if _settings.get("memory_cap") is not None:
        return _settings["memory_cap"]
    env = os.environ.get(MEMORY_CAP_ENV, "").strip()
    if env:
        return parse_bytes(env)
    ram = _physical_memory()
    return None if ram is None else ram // 2


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def check_fits(n_images: int, image_size: int, what: str) -> None:
    """Refuse to hold ``n_images`` float32 images of side ``image_size`` above the cap."""
    need = n_images * 3 * image_size * image_size * 4
    cap = memory_cap()
    if cap is not None and need > cap:
        raise LeakprobeError(
            f"{what} would hold {n_images} images of {image_size} px in memory "
            f"({human_bytes(need)} as float32), above the memory cap of {human_bytes(cap)}; "
            f"raise it with --memory-cap or ${MEMORY_CAP_ENV}, or use fewer or smaller images"
        )


def data_workers() -> int:
    """Processes that decode image files: ``$LEAKPROBE_DATA_WORKERS``, else min(4, CPUs)."""
    if _settings.get("workers") is not None:
        return int(_settings["workers"] or 0)
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise LeakprobeError(f"${WORKERS_ENV} must be an integer, got {env!r}") from None
        if n < 0:
            raise LeakprobeError(f"${WORKERS_ENV} must be >= 0, got {n}")
        return n
    return min(4, os.cpu_count() or 1)


def set_data_workers(n: int | None) -> None:
    """Decoding processes (0: decode in this process; None: back to the default)."""
    if n is not None and n < 0:
        raise LeakprobeError(f"data workers must be >= 0, got {n}")
    _settings["workers"] = n
