"""The JSON result schema of a membership audit (see docs/ARCHITECTURE.md, "Results").

The keys written by :func:`build_membership_report` and checked by :func:`load_report` are a
stable interface that scripts read: keys may be added, never renamed. The report kinds are
named here once (:data:`MembershipKind`, :data:`STEALING_KIND`, :data:`DEFENCE_KIND`,
:data:`OWNERSHIP_KIND`); the other kinds' builders live beside their renderers
(:mod:`leakprobe.report.stealing`, :mod:`leakprobe.report.defence`,
:mod:`leakprobe.report.ownership`, :mod:`leakprobe.study.report`).
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _metadata_version
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.metrics import compute_metrics, roc_points
from leakprobe.evaluation.results import AttackResult

__all__ = [
    "BLIND_ATTACK",
    "DEFENCE_KIND",
    "OWNERSHIP_KIND",
    "STEALING_KIND",
    "AttackResult",
    "MembershipKind",
    "build_membership_report",
    "build_report",
    "is_blind",
    "leakprobe_version",
    "load_report",
    "summary_rows",
    "to_jsonable",
]

BLIND_ATTACK = "blind"
# The ``kind`` of each report leakprobe writes.
MembershipKind = Literal["encoder-membership", "image2image-membership", "captioner-membership",
                         "image-text-membership"]
STEALING_KIND = "encoder-stealing"
DEFENCE_KIND = "encoder-defence"
OWNERSHIP_KIND = "encoder-ownership"

# Stable keys (docs/ARCHITECTURE.md, "Results"): checked by load_report.
_TOP_KEYS = ("leakprobe_version", "kind", "knowledge", "seed", "results")
_RESULT_KEYS = ("attack", "params", "n_members", "n_nonmembers", "metrics", "queries", "seconds")
_METRIC_KEYS = ("auc", "auc_ci", "balanced_accuracy", "tpr_at_fpr")
_OWNERSHIP_KEYS = ("leakprobe_version", "kind", "verdict", "p_value", "alpha", "combination",
                   "tests", "n_members", "n_nonmembers", "n_references", "suspect", "victim",
                   "seed", "seconds")
_OWNERSHIP_TEST_KEYS = ("name", "statistic", "p_value", "references")


def is_blind(attack: str) -> bool:
    """Whether an attack name denotes the blind, model-free baseline (``blind``, ``blind-*``)."""
    name = str(attack).lower()
    return name == BLIND_ATTACK or name.startswith((BLIND_ATTACK + "-", BLIND_ATTACK + "_"))


def leakprobe_version() -> str:
    """The installed leakprobe version (``leakprobe._version``, package metadata, "0.1.0")."""
    from leakprobe._version import __version__

    if isinstance(__version__, str) and __version__:
        return __version__
    return _dist_version("leakprobe") or "0.1.0"


def _dist_version(name: str) -> str | None:
    try:
        return _metadata_version(name)
    except PackageNotFoundError:
        return None


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, sets and paths into plain JSON types.

    Non-finite floats become None (JSON has no NaN); unknown objects become ``str(obj)``.

    Args:
        obj: any nested structure.
    Returns:
        A structure made of dict/list/str/int/float/bool/None only.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=str)]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # 0-d tensors and similar scalars
        try:
            return to_jsonable(obj.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(obj)


def _check_result(r: AttackResult) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    scores = np.asarray(r.scores, dtype=np.float64).reshape(-1)
    member = np.asarray(r.is_member).reshape(-1)
    n = scores.shape[0]
    if member.shape[0] != n:
        raise LeakprobeError(
            f"attack {r.attack!r}: {n} scores but {member.shape[0]} membership labels"
        )
    if len(r.ids) != n:
        raise LeakprobeError(f"attack {r.attack!r}: {n} scores but {len(r.ids)} ids")
    folds = None
    if r.folds is not None:
        folds = np.asarray(r.folds).reshape(-1)
        if folds.shape[0] != n:
            raise LeakprobeError(f"attack {r.attack!r}: {n} scores but {folds.shape[0]} folds")
    return scores, member.astype(bool), folds


def _default_versions() -> dict[str, Any]:
    return {
        "leakprobe": leakprobe_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _dist_version("torch"),
    }


def build_membership_report(
    kind: MembershipKind | str,
    knowledge: str,
    seed: int,
    results: list[AttackResult],
    *,
    context: dict | None = None,
    n_bootstrap: int = 1000,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Assemble the JSON report of a membership audit.

    Adds to ``context`` (without overriding what the caller set): ``versions`` (leakprobe,
    python, numpy, torch), ``total_queries`` and ``total_attack_seconds``. If a blind attack's
    AUC interval lies above 0.5, a distribution-shift warning is added; every non-blind result
    then also carries ``"vs_blind"`` (its AUC minus the blind AUC). ``summary`` is the
    report's verdict in one sentence (:func:`leakprobe.report.summary.membership_summary`:
    the attacks' tests corrected for their number, the blind floor, the detectable AUC).

    Args:
        kind: e.g. ``"encoder-membership"``.
        knowledge: ``"known-subset"`` or ``"shadow"``.
        seed: the audit's seed (also seeds the bootstrap).
        results: one :class:`AttackResult` per attack.
        context: free-form card: model, data, threat model, utility, device, wall time, ...
        n_bootstrap: bootstrap replicates of the metric intervals.
        warnings: extra warning strings to show first.
    Returns:
        The report dict (JSON-serialisable) with the stable keys of docs/ARCHITECTURE.md.
    """
    if not results:
        raise LeakprobeError("a report needs at least one attack result")
    ctx = to_jsonable(dict(context or {}))
    ctx.setdefault("versions", _default_versions())
    ctx.setdefault("total_queries", int(sum(int(r.queries) for r in results)))
    ctx.setdefault("total_attack_seconds", float(sum(float(r.seconds) for r in results)))

    out_results = []
    for r in results:
        scores, member, folds = _check_result(r)
        try:
            metrics = compute_metrics(
                scores, member, folds=folds, n_bootstrap=n_bootstrap, seed=seed,
                null_aucs=r.null_aucs, refitted=r.refitted,
            )
        except LeakprobeError as e:
            raise LeakprobeError(f"attack {r.attack!r}: {e}") from e
        notes = [str(n) for n in r.notes]
        n0 = metrics["n_nonmembers"]
        unresolved = [k for k, v in metrics["tpr_at_fpr"].items() if v is None]
        if unresolved:
            needs = ", ".join(f"{math.ceil(10 / float(k) - 1e-6):,}" for k in unresolved)
            notes.append(
                f"with {n0} non-members TPR at FPR {', '.join(unresolved)} is not reported: "
                f"it needs >= 10/f = {needs} non-members"
            )
        out_results.append(
            {
                "attack": str(r.attack),
                "params": to_jsonable(dict(r.params)),
                "n_members": metrics["n_members"],
                "n_nonmembers": n0,
                "metrics": metrics,
                "roc": roc_points(scores, member),
                "queries": int(r.queries),
                "seconds": float(r.seconds),
                "notes": notes,
                # The permuted AUCs (same permutations for every attack of the audit): the
                # null of a maximum over attacks is taken from them (study best-of-many).
                "null_aucs": to_jsonable(np.asarray(
                    r.null_aucs if r.null_aucs is not None else [], dtype=np.float64)),
                "samples": {
                    "ids": [str(i) for i in r.ids],
                    "is_member": [bool(m) for m in member],
                    "score": [float(s) for s in scores],
                    "fold": None if folds is None else to_jsonable(folds),
                },
            }
        )

    all_warnings = [str(w) for w in (warnings or [])]
    blind = [r for r in out_results if is_blind(r["attack"])]
    if blind:
        b = blind[0]["metrics"]
        lo, hi = b["auc_ci"]
        if _shift_detected(b):
            all_warnings.append(
                "Members and non-members differ in distribution: the blind, model-free attack "
                f"reaches AUC {b['auc']:.3f} [{lo:.3f}, {hi:.3f}] from the images alone "
                f"({_p_text(b)}), so every attack's AUC partly measures that difference, not "
                "leakage."
            )
            for row in out_results:
                if not is_blind(row["attack"]):
                    row["vs_blind"] = {
                        "blind_auc": b["auc"],
                        "auc_minus_blind": row["metrics"]["auc"] - b["auc"],
                    }

    from leakprobe.report.summary import membership_summary

    report: dict[str, Any] = {
        "leakprobe_version": leakprobe_version(),
        "kind": str(kind),
        "summary": "",
        "knowledge": str(knowledge),
        "seed": int(seed),
        "context": ctx,
        "warnings": all_warnings,
        "results": out_results,
    }
    report["summary"] = membership_summary(report)
    return report


build_report = build_membership_report  # the name scripts and the README know


def summary_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per attack of a membership report (its ``results``), for tables.

    The one flattener of audit results: the CLI's summary table, a study cell's ``attacks``
    and a defence sweep's table all read these rows.

    Returns:
        Per attack, in report order: ``attack``, ``auc``, ``auc_ci``, ``tpr_at_1pct_fpr`` (None
        where the audit cannot resolve 1% FPR: fewer than 1,000 non-members) and its
        ``tpr_at_1pct_fpr_ci``, ``tpr_at_fpr``, ``balanced_accuracy``, ``queries``,
        ``seconds``, the test of "no leakage" (``p_value``, ``p_value_method``,
        ``permutations``, ``null_auc_band``) and ``null_aucs`` (the AUCs under the audit's
        label permutations, shared by all its attacks: the null of a best-of-many maximum).
        Metrics a trimmed report lacks are None.
    """
    rows = []
    for r in report["results"]:
        m = r["metrics"]
        tpr = m.get("tpr_at_fpr")
        rows.append({
            "attack": r["attack"], "auc": m["auc"], "auc_ci": m.get("auc_ci"),
            "tpr_at_1pct_fpr": None if tpr is None else tpr.get("0.01"),
            "tpr_at_1pct_fpr_ci": (m.get("tpr_at_fpr_ci") or {}).get("0.01"),
            "tpr_at_fpr": tpr, "balanced_accuracy": m.get("balanced_accuracy"),
            "queries": r.get("queries"), "seconds": r.get("seconds"),
            "p_value": m.get("p_value"), "p_value_method": m.get("p_value_method"),
            "permutations": m.get("permutations"), "null_auc_band": m.get("null_auc_band"),
            "null_aucs": list(r.get("null_aucs") or []),
        })
    return rows


# The blind floor warns when its one-sided test rejects "same distribution" at this level
# (the level of the former check "lower end of the 95% interval above 0.5").
BLIND_WARNING_LEVEL = 0.025


def _shift_detected(blind_metrics: dict) -> bool:
    """Whether the blind attack's test of "no difference" rejects (see BLIND_WARNING_LEVEL).

    Uses the permutation p-value when the audit ran permutations; without them (a fitted
    blind scorer has no valid p-value) it falls back to the interval's lower end.
    """
    p = blind_metrics.get("p_value")
    if p is not None:
        return float(p) <= BLIND_WARNING_LEVEL
    return float(blind_metrics["auc_ci"][0]) > 0.5


def _p_text(metrics: dict) -> str:
    p = metrics.get("p_value")
    if p is None:
        return "no permutation test run"
    n = metrics.get("permutations") or 0
    return f"p = {p:.3g}" + (f", {n} permutations" if n else "")


def _require(obj: Any, keys: tuple[str, ...], where: str, path: Path) -> None:
    if not isinstance(obj, dict):
        raise LeakprobeError(f"{path}: {where} must be a JSON object")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise LeakprobeError(f"{path}: {where} lacks key(s) {', '.join(missing)}")


def _check_membership(report: dict[str, Any], path: Path) -> None:
    _require(report, _TOP_KEYS, "the report", path)
    for i, r in enumerate(report["results"]):
        _require(r, _RESULT_KEYS, f"result {i}", path)
        _require(r["metrics"], _METRIC_KEYS, f"metrics of result {i} ({r['attack']})", path)


def _check_stealing(report: dict[str, Any], path: Path) -> None:
    for i, r in enumerate(report["results"]):
        _require(r, ("method", "metrics"), f"result {i}", path)


def _check_ownership(report: dict[str, Any], path: Path) -> None:
    _require(report, _OWNERSHIP_KEYS, "the report", path)
    if not isinstance(report["tests"], list):
        raise LeakprobeError(f"{path}: 'tests' must be a list")
    for i, t in enumerate(report["tests"]):
        _require(t, _OWNERSHIP_TEST_KEYS, f"test {i}", path)


# kind -> the keys check of :func:`load_report` (a kind not listed is checked as membership)
_CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    **{kind: _check_membership for kind in get_args(MembershipKind)},
    STEALING_KIND: _check_stealing,
    OWNERSHIP_KIND: _check_ownership,
}
# kinds whose report has no ``results`` list
_NO_RESULTS = frozenset({OWNERSHIP_KIND})


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a report JSON written by leakprobe.

    Membership reports need the stable keys (``leakprobe_version``, ``kind``,
    ``knowledge``, ``seed``, ``results`` with ``attack``, ``params``, ``n_members``,
    ``n_nonmembers``, ``metrics`` {auc, auc_ci, balanced_accuracy, tpr_at_fpr}, ``queries``,
    ``seconds``). Stealing reports (``kind`` ``encoder-stealing``) need ``kind`` and
    ``results`` with ``method`` and ``metrics``. Ownership reports (``kind``
    ``encoder-ownership``) need ``verdict``, ``p_value``, ``alpha``, ``combination``,
    ``tests`` (each with ``name``, ``statistic``, ``p_value``, ``references``), the sample
    sizes, ``suspect``, ``victim``, ``seed`` and ``seconds``. Optional keys get defaults
    (``context``: {}, ``warnings``: []).

    Args:
        path: the report.json file.
    Returns:
        The report dict.
    Raises:
        LeakprobeError: unreadable file, invalid JSON or missing keys.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LeakprobeError(f"cannot read report {path}: {e.strerror or e}") from e
    try:
        report = json.loads(text)
    except json.JSONDecodeError as e:
        raise LeakprobeError(f"{path} is not valid JSON: {e.msg} (line {e.lineno})") from e
    _require(report, ("kind",), "the report", path)
    if str(report["kind"]) not in _NO_RESULTS:
        _require(report, ("results",), "the report", path)
        if not isinstance(report["results"], list):
            raise LeakprobeError(f"{path}: 'results' must be a list")
    check = _CHECKS.get(str(report["kind"]), _check_membership)  # other kinds: membership's
    check(report, path)
    report.setdefault("context", {})
    report.setdefault("warnings", [])
    return report
