"""Early stopping: audit the encoder of earlier epochs of one training run.

Memorisation of the training images grows with training time, so a model taken earlier
leaks less (and is usually less useful). One run to the largest epoch saves a snapshot at
each chosen epoch (``TrainConfig.snapshot_epochs``); every snapshot is then audited and its
utility measured, giving attack AUC and utility against epochs.

:func:`early_stopping_config` plans the run of a whole sweep (train to the largest epoch);
:func:`stop_at` is one setting: the encoder after ``epoch`` epochs of a given run's schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from leakprobe.errors import LeakprobeError
from leakprobe.training.trainer import TrainConfig


def check_epochs(epochs: Sequence[float]) -> tuple[int, ...]:
    """Sorted, distinct, positive integer epochs.

    Raises:
        LeakprobeError: an empty list, a non-integer or an epoch < 1.
    """
    if not epochs:
        raise LeakprobeError("early stopping needs at least one epoch")
    out = set()
    for e in epochs:
        if e is None or float(e) != int(e) or int(e) < 1:
            raise LeakprobeError(f"early-stopping epochs must be integers >= 1, got {e!r}")
        out.add(int(e))
    return tuple(sorted(out))


def early_stopping_config(config: TrainConfig, epochs: Sequence[float]) -> TrainConfig:
    """The recipe change: train to ``max(epochs)`` and snapshot every listed epoch.

    The learning-rate schedule is that of the full run, so the snapshot of epoch E is the
    model a user stopping at E would have (not a model trained with a schedule ending at E).
    """
    stops = check_epochs(epochs)
    return replace(config, epochs=stops[-1], snapshot_epochs=stops)


def stop_at(config: TrainConfig, epoch: float) -> TrainConfig:
    """One early-stopping setting: ``config``'s run, with a snapshot after ``epoch`` epochs.

    The run keeps its length (and so its learning-rate schedule); the setting's encoder is
    that snapshot.

    Raises:
        LeakprobeError: ``epoch`` is not an integer in ``1..config.epochs``.
    """
    (stop,) = check_epochs([epoch])
    if stop > config.epochs:
        raise LeakprobeError(f"early-stopping epoch {stop} is after the end of training "
                             f"({config.epochs} epochs)")
    return replace(config, snapshot_epochs=(*config.snapshot_epochs, stop))
