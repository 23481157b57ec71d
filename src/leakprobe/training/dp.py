"""DP-SGD for the SSL trainer: per-image gradient clipping, Gaussian noise, accounting.

(Engine in progress: only the configuration is defined here so far.)
"""

from __future__ import annotations

from dataclasses import dataclass

from leakprobe.errors import LeakprobeError


@dataclass
class DPConfig:
    """DP-SGD settings.

    Attributes:
        noise_multiplier: std of the Gaussian noise in units of ``max_grad_norm``
            (None: derived from ``target_epsilon``).
        max_grad_norm: per-image clipping bound C.
        delta: the delta at which epsilon is reported.
        target_epsilon: when set (and ``noise_multiplier`` is None), the noise multiplier is
            chosen so that the whole run spends this epsilon.
        accountant: ``rdp`` (Opacus' RDP accountant) or ``prv``.
    """

    noise_multiplier: float | None = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if not self.max_grad_norm > 0:
            raise LeakprobeError(f"DP max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise LeakprobeError(f"DP delta must be in (0, 1), got {self.delta}")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise LeakprobeError("DP needs a noise multiplier or a target epsilon")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise LeakprobeError(f"DP noise multiplier must be >= 0, got {self.noise_multiplier}")
