"""Reading a DP-SGD record (``model.json``'s ``"dp"``) without torch: which epsilon to show.

A record written by :meth:`leakprobe.training.dp.DPSGD.summary` holds

* ``epsilon``: the (epsilon, delta) guarantee per training image, a float only when the
  method's per-image sensitivity is provably bounded by the clipping norm C
  (``exact_per_image``) and noise was added; otherwise ``None``;
* ``epsilon_nominal``: the accountant's number for the run (``None`` only without noise);
* ``caveat``: ``None``, or one line saying why ``epsilon_nominal`` is not a guarantee.

Every place that prints an epsilon goes through :func:`epsilon_text` (or
:func:`dp_epsilon`), so a number that is not a guarantee is never shown bare. Records
written before these keys existed (batches were shuffled, not Poisson-sampled, and DINO's
centre was not private) are read as nominal, with :data:`LEGACY_CAVEAT`.
"""

from __future__ import annotations

import math
from typing import Any

LEGACY_CAVEAT = ("recorded by an older leakprobe (shuffled batches, in-batch terms not "
                 "checked): epsilon_nominal is the accountant's number, not a guarantee")
GENERIC_CAVEAT = ("{name}: its per-image sensitivity is not shown to be bounded by C, so "
                  "epsilon_nominal is the accountant's number for clipped per-image terms, "
                  "not a guarantee")


def dp_epsilon(dp: Any) -> dict | None:
    """``{"epsilon", "epsilon_nominal", "caveat"}`` of a DP record (None: not a DP record).

    Args:
        dp: a ``"dp"`` record (dict), or anything else (None, ``True``...), which gives None.
    """
    if not isinstance(dp, dict):
        return None
    if "epsilon_nominal" in dp:
        return {"epsilon": dp.get("epsilon"), "epsilon_nominal": dp.get("epsilon_nominal"),
                "caveat": dp.get("caveat")}
    nominal = dp.get("epsilon")
    return {"epsilon": None, "epsilon_nominal": nominal,
            "caveat": LEGACY_CAVEAT if nominal is not None else None}


def _num(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "inf"


def epsilon_text(dp: Any, detail: bool = True, epsilon: float | None = None) -> str:
    """The epsilon of a DP record as a reader should see it.

    * a guarantee: ``"2.14"``;
    * no guarantee: ``"none (nominal 6.78: <caveat>)"`` (``detail=False``: ``"none (nominal
      6.78, not a guarantee)"``);
    * no noise: ``"inf (no noise)"``; not a DP record: ``"-"`` (or ``epsilon`` formatted when
      a caller has a bare number from a record without DP details).
    """
    eps = dp_epsilon(dp)
    if eps is None:
        return "-" if epsilon is None else _num(float(epsilon))
    if eps["epsilon"] is not None:
        return _num(float(eps["epsilon"]))
    if eps["epsilon_nominal"] is None:
        return "inf (no noise)"
    nominal = _num(float(eps["epsilon_nominal"]))
    if detail and eps["caveat"]:
        return f"none (nominal {nominal}: {eps['caveat']})"
    return f"none (nominal {nominal}, not a guarantee)"
