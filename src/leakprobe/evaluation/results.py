"""The per-attack outcome every audit produces, before metrics are computed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
