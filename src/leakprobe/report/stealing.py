"""The JSON report of an encoder-stealing run (``kind: encoder-stealing``).

Built by :func:`leakprobe.workflows.steal.steal_encoder` through :func:`stealing_result` (one
surrogate) and :func:`build_stealing_report` (the run); rendered by
:func:`leakprobe.report.html.write_report`. Keys may be added, never renamed.
"""

from __future__ import annotations

import math
from typing import Any

from leakprobe.report.schema import STEALING_KIND, leakprobe_version

__all__ = ["build_stealing_report", "stealing_result", "stealing_summary"]


def stealing_result(
    *,
    method: str,
    budget: int,
    views_per_image: int,
    images_queried: int,
    params: dict[str, Any],
    epochs: int,
    metrics: dict[str, Any],
    defence: str = "none",
    query_recipe: str | None = None,
) -> dict[str, Any]:
    """The record of one surrogate: what it cost and how it was judged.

    Args:
        method: the stealing method (``contsteal``, ``mse``, ``cosine``).
        budget: the queries it was allowed.
        views_per_image: target queries per query image.
        images_queried: the query images it was trained on (``budget // views_per_image``).
        params: the method's parameters.
        epochs: its training epochs.
        metrics: the theft metrics (empty without probe sets).
        defence: the answer defence the attacker's answers went through (``none``).
        query_recipe: what the target embedded (``clean``, ``simclr``, ``contsteal``, ``rda``).
    Returns:
        ``{"method", "budget", "queries_used", "views_per_image", "images_queried",
        "params", "epochs", "metrics", "defence", "query_recipe"}``; the run adds ``model``
        (where it was saved), ``seconds`` (training and judging) and ``query_seconds`` (the
        budget's share of its query stream's time).
    """
    return {"method": method, "budget": budget, "queries_used": images_queried * views_per_image,
            "views_per_image": views_per_image, "images_queried": images_queried,
            "params": params, "epochs": epochs, "metrics": metrics, "defence": defence,
            "query_recipe": query_recipe}


def build_stealing_report(
    *,
    seed: int,
    results: list[dict[str, Any]],
    context: dict[str, Any],
    warnings: list[str],
    target_probe_accuracy: float | None = None,
    random_init_probe_accuracy: float | None = None,
    random_init_procrustes_cosine: float | None = None,
    probe_informative: bool | None = None,
    probe_informative_margin: float | None = None,
    target_knn_accuracy: float | None = None,
    defences: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Assemble the report of a stealing run.

    Args:
        seed: the run's seed.
        results: one :func:`stealing_result` record per (method, budget).
        context: the setting (target, query data, surrogate, budgets, queries, wall time...).
        warnings: shown first (e.g. a probe that cannot judge theft).
        target_probe_accuracy, random_init_probe_accuracy, random_init_procrustes_cosine:
            the references a surrogate is read against (None without probe sets).
        probe_informative, probe_informative_margin: the probe's verdict; both keys are
            written only when it was judged (with probe sets).
        target_knn_accuracy: the target's weighted k-NN accuracy on the probe sets.
        defences: per target defence, its cost to a legitimate user (``defence``,
            ``target_probe_accuracy``, ``target_knn_accuracy``, ``probe_accuracy_drop``);
            written only when defences were asked for.
    Returns:
        The report dict (``kind: encoder-stealing``); ``summary`` is its verdict in one
        sentence (:func:`stealing_summary`).
    """
    verdict: dict[str, Any] = {}
    if probe_informative is not None:
        verdict = {"probe_informative": probe_informative,
                   "probe_informative_margin": probe_informative_margin}
    report = {
        "leakprobe_version": leakprobe_version(), "kind": STEALING_KIND, "summary": "",
        "seed": seed,
        "target_probe_accuracy": target_probe_accuracy,
        "target_knn_accuracy": target_knn_accuracy,
        "random_init_probe_accuracy": random_init_probe_accuracy,
        "random_init_procrustes_cosine": random_init_procrustes_cosine,
        **verdict,
        **({"defences": defences} if defences is not None else {}),
        "context": context,
        "warnings": warnings,
        "results": results,
    }
    report["summary"] = stealing_summary(report)
    return report


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _best(results: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The result with the highest ``metrics[key]`` (fewest queries on a tie), or None."""
    scored = [r for r in results if _number((r.get("metrics") or {}).get(key)) is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["metrics"][key], -int(r.get("queries_used") or 0)))


def _spent(r: dict[str, Any]) -> str:
    queries = int(r.get("queries_used") or r.get("budget") or 0)
    return f"with {queries:,} queries ({r.get('method', '?')})"


def stealing_summary(report: dict[str, Any]) -> str:
    """The one-sentence verdict of a stealing report: how much of the target the best copy
    reaches, or why the probe cannot say.

    The best copy is the undefended surrogate with the highest linear-probe accuracy; its
    share of the target's probe accuracy is read against an untrained (random-init)
    surrogate's. Without an informative probe the sentence falls back to the embeddings'
    alignment (Procrustes cosine); answer defences add how far they hold the best copy down.
    """
    results = list(report.get("results") or [])
    if not results:
        return "No surrogate was trained"
    plain = [r for r in results if (r.get("defence") or "none") == "none"] or results
    best = _best(plain, "surrogate_probe_accuracy")
    random_acc = _number(report.get("random_init_probe_accuracy"))
    if best is None:
        methods = ", ".join(dict.fromkeys(str(r.get("method")) for r in results))
        most = max(int(r.get("queries_used") or r.get("budget") or 0) for r in results)
        return (f"{len(results)} surrogate{'s' if len(results) != 1 else ''} trained "
                f"({methods}, up to {most:,} queries); without probe sets how much of the "
                "target was copied is not measured")
    m = best["metrics"]
    stolen = float(m["surrogate_probe_accuracy"])
    target = _number(m.get("target_probe_accuracy"))
    if target is None:
        target = _number(report.get("target_probe_accuracy"))
    if report.get("probe_informative") is False:
        text = ("Theft cannot be judged by probe accuracy: the target's probe"
                + (f" ({target:.2f})" if target is not None else "")
                + " is no better than an untrained encoder's"
                + (f" ({random_acc:.2f})" if random_acc is not None else ""))
        aligned = _best(plain, "procrustes_cosine")
        if aligned is not None:
            floor = _number(report.get("random_init_procrustes_cosine"))
            text += (f"; the closest copy's embeddings align with the target's at Procrustes "
                     f"cosine {float(aligned['metrics']['procrustes_cosine']):.2f}"
                     + (f" (untrained: {floor:.2f})" if floor is not None else "")
                     + f" {_spent(aligned)}")
        return text
    if random_acc is not None and stolen <= random_acc:
        return (f"No theft shown by the probe: the best copy's accuracy ({stolen:.2f} "
                f"{_spent(best)}) is no better than an untrained encoder's ({random_acc:.2f})")
    if target is not None and target > 0:
        text = (f"The stolen copy reaches {stolen / target:.0%} of the target's probe accuracy "
                f"({stolen:.2f} vs {target:.2f}"
                + (f"; an untrained encoder reaches {random_acc:.2f}" if random_acc is not None
                   else "") + f") {_spent(best)}")
    else:
        text = f"The stolen copy reaches probe accuracy {stolen:.2f} {_spent(best)}"
    return text + _defence_clause(report, results, target)


def _defence_clause(report: dict[str, Any], results: list[dict[str, Any]],
                    target: float | None) -> str:
    """``; behind the defence D the best copy reaches only 60% (...)``, or nothing."""
    defended: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(str(r.get("defence")) for r in results
                              if (r.get("defence") or "none") != "none"):
        best = _best([r for r in results if str(r.get("defence")) == name],
                     "surrogate_probe_accuracy")
        if best is not None:
            defended[name] = best
    if not defended or target is None or target <= 0:
        return ""
    name, best = min(defended.items(),
                     key=lambda kv: kv[1]["metrics"]["surrogate_probe_accuracy"])
    stolen = float(best["metrics"]["surrogate_probe_accuracy"])
    cost = next((d for d in report.get("defences") or [] if d.get("defence") == name), None)
    drop = _number((cost or {}).get("probe_accuracy_drop"))
    return (f"; behind the answer defence {name} the best copy reaches {stolen / target:.0%}"
            + (f", at a cost of {drop:.2f} probe accuracy to legitimate users"
               if drop is not None else ""))
