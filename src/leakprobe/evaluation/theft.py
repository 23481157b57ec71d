"""How well a stolen encoder copies its target: downstream accuracy, agreement, alignment."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leakprobe.evaluation.utility import linear_probe


def procrustes_cosine(source: torch.Tensor, target: torch.Tensor) -> float:
    """Mean cosine similarity after the best orthogonal map of ``source`` onto ``target``.

    Both are centred; the map is ``U V^T`` from the SVD of ``source^T target`` (orthogonal
    Procrustes). Dimensions must match (a surrogate is trained into the target's space).
    """
    s = source.double() - source.double().mean(0)
    t = target.double() - target.double().mean(0)
    u, _, vh = torch.linalg.svd(s.t() @ t, full_matrices=False)
    aligned = s @ (u @ vh)
    return float(F.cosine_similarity(aligned, t, dim=1).mean())


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
        test images where both probes predict the same class), ``procrustes_cosine`` and
        ``raw_cosine`` (cosine without alignment, when the dimensions match).
    """
    t_acc, t_pred = linear_probe(target_train, train_labels, target_test, test_labels, seed)
    s_acc, s_pred = linear_probe(stolen_train, train_labels, stolen_test, test_labels, seed)
    out = {"target_probe_accuracy": t_acc, "surrogate_probe_accuracy": s_acc,
           "agreement": float((t_pred == s_pred).mean()),
           "accuracy_ratio": s_acc / t_acc if t_acc > 0 else float("nan")}
    if stolen_test.shape[1] == target_test.shape[1]:
        out["procrustes_cosine"] = procrustes_cosine(stolen_test, target_test)
        out["raw_cosine"] = float(F.cosine_similarity(stolen_test, target_test, dim=1).mean())
    return out
