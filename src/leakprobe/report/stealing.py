"""The JSON report of an encoder-stealing run (``kind: encoder-stealing``).

Built by :func:`leakprobe.workflows.steal.steal_encoder` through :func:`stealing_result` (one
surrogate) and :func:`build_stealing_report` (the run); rendered by
:func:`leakprobe.report.html.write_report`. Keys may be added, never renamed.
"""

from __future__ import annotations

from typing import Any

from leakprobe.report.schema import STEALING_KIND, leakprobe_version

__all__ = ["build_stealing_report", "stealing_result"]


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
        The report dict (``kind: encoder-stealing``).
    """
    verdict: dict[str, Any] = {}
    if probe_informative is not None:
        verdict = {"probe_informative": probe_informative,
                   "probe_informative_margin": probe_informative_margin}
    return {
        "leakprobe_version": leakprobe_version(), "kind": STEALING_KIND, "seed": seed,
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
