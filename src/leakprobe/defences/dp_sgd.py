"""DP-SGD as a defence: Poisson sampling, per-image clipping and Gaussian noise, with epsilon.

The engine is :class:`leakprobe.training.dp.DPSGD`; this module only turns a strength (a
noise multiplier, or a target epsilon for the whole run) into the training recipe. What the
epsilon means depends on the SSL method (its ``dp_per_image_exact``), and the record says it:

* MAE, BYOL, DINO (each image's loss depends on that image and a stop-gradient teacher that
  averages DP-trained weights; DINO's centre is frozen under DP): adding or removing one
  training image changes one clipped gradient term, so with Poisson sampling ``epsilon`` is
  the usual DP-SGD (epsilon, delta) guarantee per training image.
* SimCLR (in-batch negatives) and MoCo (a queue of un-noised keys): one image enters many
  clipped terms, so its sensitivity exceeds C; ``epsilon`` is null, the accountant's number
  is ``epsilon_nominal``, and ``caveat`` says why in one line.

A target epsilon sets the noise so that the accountant's number meets it (for SimCLR/MoCo a
nominal target). BatchNorm is replaced by GroupNorm in the backbone (``norm="group"``,
recorded in ``model.json``) and in the heads.
"""

from __future__ import annotations

from dataclasses import replace

from leakprobe.errors import LeakprobeError
from leakprobe.training.dp import DPConfig
from leakprobe.training.trainer import TrainConfig


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
