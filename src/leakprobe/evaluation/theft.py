"""How well a stolen encoder copies its target: downstream accuracy, agreement, alignment."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leakprobe.evaluation.utility import linear_probe


def procrustes_cosine(
    source: torch.Tensor,
    target: torch.Tensor,
    source_eval: torch.Tensor | None = None,
    target_eval: torch.Tensor | None = None,
) -> float:
    """Mean cosine similarity after the orthogonal map of ``source`` onto ``target``.

    The map is fitted on ``(source, target)`` -- both centred; ``U V^T`` from the SVD of
    ``source^T target`` (orthogonal Procrustes) -- and judged on ``(source_eval,
    target_eval)``, centred with the fit means. Judged on the fit pair itself (no eval pair)
    the number is optimistic: a 512-d map fitted on 500 images aligns two *independent* random
    embeddings to a cosine of about 0.76; held out, they score about 0. Dimensions must
    match (a surrogate is trained into the target's space).
    """
    s_mean, t_mean = source.double().mean(0), target.double().mean(0)
    s = source.double() - s_mean
    t = target.double() - t_mean
    u, _, vh = torch.linalg.svd(s.t() @ t, full_matrices=False)
    if source_eval is None or target_eval is None:
        return float(F.cosine_similarity(s @ (u @ vh), t, dim=1).mean())
    aligned = (source_eval.double() - s_mean) @ (u @ vh)
    return float(F.cosine_similarity(aligned, target_eval.double() - t_mean, dim=1).mean())


def theft_metrics(
    target_train: torch.Tensor,
    target_test: torch.Tensor,
    stolen_train: torch.Tensor,
    stolen_test: torch.Tensor,
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    seed: int = 0,
) -> dict:
    """Linear-probe accuracy of target and stolen embeddings, agreement and alignment.

    Args:
        target_train, target_test: the target's embeddings of the probe sets.
        stolen_train, stolen_test: the surrogate's embeddings of the same images.
        train_labels, test_labels: downstream labels.
    Returns:
        ``target_probe_accuracy``, ``surrogate_probe_accuracy``, ``agreement`` (fraction of
        test images where both probes predict the same class), ``procrustes_cosine`` (the
        orthogonal map fitted on the probe-train embeddings, judged on probe-test) and
        ``raw_cosine`` (probe-test cosine without alignment), when the dimensions match.
    """
    t_acc, t_pred = linear_probe(target_train, train_labels, target_test, test_labels, seed)
    s_acc, s_pred = linear_probe(stolen_train, train_labels, stolen_test, test_labels, seed)
    out = {"target_probe_accuracy": t_acc, "surrogate_probe_accuracy": s_acc,
           "agreement": float((t_pred == s_pred).mean()),
           "accuracy_ratio": s_acc / t_acc if t_acc > 0 else float("nan")}
    if stolen_test.shape[1] == target_test.shape[1]:
        out["procrustes_cosine"] = procrustes_cosine(stolen_train, target_train, stolen_test,
                                                     target_test)
        out["raw_cosine"] = float(F.cosine_similarity(stolen_test, target_test, dim=1).mean())
    return out
