"""The per-attack outcome every audit produces, before metrics are computed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FitTask:
    """One fit of a scorer: fit on ``features[train]`` with ``labels``, score ``features[test]``."""

    train: np.ndarray
    labels: np.ndarray
    test: np.ndarray


@dataclass
class AttackResult:
    """Per-sample output of one membership attack against one target.

    Attributes:
        attack: attack name (``"blind"`` marks the model-free distribution-shift check).
        params: attack parameters (JSON-serialisable after :func:`to_jsonable`).
        scores: (N,) scores, higher = more likely member.
        is_member: (N,) boolean ground truth.
        ids: N sample ids.
        folds: (N,) cross-fitting fold of each sample, or None.
        queries: target queries the attack spent.
        seconds: wall time of fit + score.
        notes: free-text remarks shown in the report.
        null_aucs: AUCs of the label-permutation test (empty: not run).
        refitted: whether the scorer was fitted on the audited labels (cross-fitted), so
            that only the permutation test gives a valid p-value.
    """

    attack: str
    params: dict
    scores: np.ndarray
    is_member: np.ndarray
    ids: list[str]
    folds: np.ndarray | None
    queries: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    null_aucs: np.ndarray | None = None
    refitted: bool = False
