"""Constants and helpers shared by the study tests."""

from __future__ import annotations

TWO_CELLS = {
    "name": "two-cells", "data": "synthetic:40", "members": 20, "nonmembers": 20,
    "seeds": [0], "attacks": ["baseline-norm"],
    "train": {"epochs": 2, "batch_size": 10, "lr": 0.003},
    "paradigms": [{"method": "simclr", "arch": "resnet-tiny"}],
    "defences": ["none", {"kind": "scsr", "crop_min": [0.5]}],
    "device": "cpu",
}


class Killed(Exception):
    """Stands in for the process being killed."""


def numbers(summary: dict) -> dict:
    """What a cell measured (everything but timings and where it ran)."""
    return {c["name"]: (c["utility"], [(a["attack"], a["auc"], a["auc_ci"],
                                        a["tpr_at_1pct_fpr"]) for a in c["attacks"]])
            for c in summary["cells"]}
