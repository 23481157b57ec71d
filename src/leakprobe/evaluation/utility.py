"""How useful an encoder is: k-NN and linear-probe accuracy of its embeddings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from leakprobe.errors import LeakprobeError


def knn_accuracy(
    train_emb: torch.Tensor,
    train_labels: torch.Tensor,
    test_emb: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.1,
) -> float:
    """Weighted k-NN accuracy with cosine similarity (the usual SSL monitor, Wu et al. 2018)."""
    _check(train_emb, train_labels, test_emb, test_labels)
    a, b = F.normalize(train_emb.float(), dim=1), F.normalize(test_emb.float(), dim=1)
    sims = b @ a.t()
    k = min(k, a.shape[0])
    top, idx = sims.topk(k, dim=1)
    n_cls = int(max(train_labels.max(), test_labels.max())) + 1
    votes = torch.zeros(b.shape[0], n_cls)
    votes.scatter_add_(1, train_labels[idx], (top / temperature).exp())
    return float((votes.argmax(1) == test_labels).float().mean())


def linear_probe(
    train_emb: torch.Tensor,
    train_labels: torch.Tensor,
    test_emb: torch.Tensor,
    test_labels: torch.Tensor,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """Accuracy of a logistic-regression probe on standardised embeddings, and its predictions."""
    _check(train_emb, train_labels, test_emb, test_labels)
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    )
    probe.fit(train_emb.double().numpy(), train_labels.numpy())
    pred = probe.predict(test_emb.double().numpy())
    return float((pred == test_labels.numpy()).mean()), pred


def _check(train_emb, train_labels, test_emb, test_labels) -> None:
    if len(train_emb) == 0 or len(test_emb) == 0:
        raise LeakprobeError("utility evaluation needs non-empty train and test sets")
    if len(train_emb) != len(train_labels) or len(test_emb) != len(test_labels):
        raise LeakprobeError("one label per embedding is required")
    if not (torch.isfinite(train_emb).all() and torch.isfinite(test_emb).all()):
        raise LeakprobeError("embeddings contain NaN/inf")
