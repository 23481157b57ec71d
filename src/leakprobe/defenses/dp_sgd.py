"""DP-SGD as a defence: per-image clipping and Gaussian noise, with epsilon reported.

The engine is :class:`leakprobe.training.dp.DPSGD`; this module only turns a strength (a
noise multiplier, or a target epsilon for the whole run) into the training recipe and states
what the guarantee means for each SSL method.

Clipping unit: one training image with all its augmented views. Its privacy meaning:

* MAE, BYOL, DINO (``per_image_objective``: each image's loss depends on that image and a
  stop-gradient teacher): replacing one training image changes one clipped gradient term,
  so (epsilon, delta) is the usual DP-SGD guarantee for that image (with the usual
  approximation for shuffled fixed-size batches, and ignoring that the EMA teacher is a
  function of earlier noisy steps, which is post-processing).
* SimCLR, MoCo (in-batch negatives): an image also appears as a negative in the other
  images' terms, so it can move up to B clipped terms; each term stays bounded by C, but the
  reported epsilon is the accounting of per-image clipped contributions, not a strict
  per-image guarantee (it would hold with a bound B times larger).

BatchNorm is replaced by GroupNorm in the backbone (``norm="group"``, recorded in
``model.json``) and in the heads.
"""

from __future__ import annotations

from dataclasses import replace

from leakprobe.errors import LeakprobeError
from leakprobe.training.dp import DPConfig
from leakprobe.training.trainer import TrainConfig

CLIPPING_UNIT = "image"


def dp_train_config(
    config: TrainConfig,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    accountant: str = "rdp",
) -> TrainConfig:
    """The recipe change: ``config`` with DP-SGD on (one of noise or target epsilon).

    Raises:
        LeakprobeError: both or neither of ``noise_multiplier`` and ``target_epsilon``.
    """
    if (noise_multiplier is None) == (target_epsilon is None):
        raise LeakprobeError("DP-SGD needs exactly one of a noise multiplier and a target "
                             "epsilon")
    dp = DPConfig(noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, delta=delta,
                  target_epsilon=target_epsilon, accountant=accountant)
    return replace(config, dp=dp, amp=False)
