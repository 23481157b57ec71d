"""Victim-suspect similarity against reference encoders: linear CKA and held-out Procrustes.

Both statistics compare two encoders' embeddings of the same images (the owner's members and
non-members, clean, no augmentation):

- **Linear CKA** (Kornblith et al., ICML 2019, "Similarity of Neural Network Representations
  Revisited"): ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred embeddings;
  invariant to rotations and isotropic scaling, defined for any two widths.
- **Held-out Procrustes cosine**: the orthogonal map suspect -> victim (orthogonal Procrustes
  on centred, L2-normalised embeddings) is fitted on a seeded random half of the images and
  judged on the other half by the mean cosine to the victim's embedding; both halves take each
  role and the two cosines are averaged. Fitted and judged on the same images the number is
  optimistic (two independent 512-d encoders align to ~0.76 on 500 images,
  :func:`~leakprobe.evaluation.theft.procrustes_cosine`); held out, unrelated embeddings score
  about 0. Different widths: the narrower embedding is padded with zero columns, so the map
  is an isometry of the narrower space into the wider one (a least-squares linear map would
  fit the half's noise when the width nears the number of images).

The null of "the suspect is not a copy" is the same statistic for each reference encoder
against the victim: ``p = (1 + #{r : stat_r >= stat_suspect}) / (R + 1)``, valid when the
suspect, under the null, is one more draw of the kind of encoder the references are
(exchangeable with them). With R references the smallest p-value is ``1 / (R + 1)``: with 4
references 0.2, so this test alone can never reach alpha = 0.01 (that needs R >= 99); it is
run and shown, and the combination leaves it out where it cannot reject
(:func:`~leakprobe.evaluation.ownership.combine_tests`). Its validity also rests on the
references resembling the independent encoders one may meet: an independent encoder much
larger or better trained than the references may sit closer to the victim than all of them.
The ``z`` it reports, ``(stat - mean_refs) / sd_refs``, is descriptive, not a p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.ownership import OwnershipTest
from leakprobe.evaluation.theft import procrustes_cosine

__all__ = ["heldout_procrustes", "linear_cka", "reference_rank_p", "similarity_tests"]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two embeddings of the same N images, (N, Dx) and (N, Dy)."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise LeakprobeError(f"CKA needs the same >= 2 images embedded twice, got "
                             f"{x.shape[0]} and {y.shape[0]}")
    a = x.double() - x.double().mean(0)
    b = y.double() - y.double().mean(0)
    if a.shape[0] < min(a.shape[1], b.shape[1]):  # the N x N Gram form is cheaper
        ka, kb = a @ a.T, b @ b.T
        hsic, na, nb = (ka * kb).sum(), ka.pow(2).sum(), kb.pow(2).sum()
    else:
        hsic = (b.T @ a).pow(2).sum()
        na, nb = (a.T @ a).pow(2).sum(), (b.T @ b).pow(2).sum()
    denom = float(torch.sqrt(na * nb))
    return float(hsic) / denom if denom > 0 else 0.0


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[1])) if x.shape[1] < width else x


def heldout_procrustes(source: torch.Tensor, target: torch.Tensor, *, seed: int = 0) -> float:
    """Mean held-out cosine after the orthogonal map of ``source`` onto ``target``.

    Args:
        source: (N, Ds) the suspect's embeddings.
        target: (N, Dt) the victim's embeddings of the same images.
        seed: seeds the halving (the same halves for every encoder of one audit).
    Returns:
        The two-fold mean cosine (fit on one half, judged on the other, then swapped).
    """
    n = source.shape[0]
    if target.shape[0] != n or n < 4:
        raise LeakprobeError(f"Procrustes needs the same >= 4 images embedded twice, got "
                             f"{n} and {target.shape[0]}")
    width = max(source.shape[1], target.shape[1])
    s = _pad(F.normalize(source.double(), dim=1), width)
    t = _pad(F.normalize(target.double(), dim=1), width)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    a, b = order[: n // 2], order[n // 2:]
    return 0.5 * (procrustes_cosine(s[a], t[a], s[b], t[b])
                  + procrustes_cosine(s[b], t[b], s[a], t[a]))


def reference_rank_p(observed: float, null: Sequence[float]) -> float:
    """``(1 + #{null >= observed}) / (R + 1)``: the rank p-value against R references."""
    values = np.asarray(list(null), dtype=np.float64)
    return float((1 + np.sum(values >= observed - 1e-12)) / (values.size + 1))


def _test(name: str, fn: Callable[[torch.Tensor, torch.Tensor], float],
          suspect: torch.Tensor, victim: torch.Tensor,
          references: Sequence[torch.Tensor], what: str) -> OwnershipTest:
    observed = fn(suspect, victim)
    null = [fn(r, victim) for r in references]
    sd = float(np.std(null, ddof=1)) if len(null) > 1 else 0.0
    z = (observed - float(np.mean(null))) / sd if sd > 0 else None
    return OwnershipTest(
        name=name, statistic=observed, p_value=reference_rank_p(observed, null),
        references=len(null), min_p=1.0 / (len(null) + 1),
        details={"statistic_name": what, "reference_values": [float(v) for v in null],
                 "z": z, "p_value_method": "reference rank (1 + #refs >= suspect) / (R + 1)",
                 "smallest_possible_p": 1.0 / (len(null) + 1)})


def similarity_tests(
    suspect: torch.Tensor,
    victim: torch.Tensor,
    references: Sequence[torch.Tensor],
    *,
    seed: int = 0,
) -> list[OwnershipTest]:
    """``similarity-cka`` and ``similarity-procrustes`` of the suspect against the references.

    Args:
        suspect: (N, Ds) the suspect's embeddings of the owner's images.
        victim: (N, Dv) the victim's embeddings of the same images.
        references: each reference encoder's (N, Dr) embeddings of them.
        seed: seeds Procrustes' halves (the same for every encoder).
    Returns:
        The two tests (their null: each reference's statistic against the victim).
    """
    if not references:
        raise LeakprobeError("the similarity tests need reference encoders (their null)")

    def procrustes(a: torch.Tensor, b: torch.Tensor) -> float:
        return heldout_procrustes(a, b, seed=seed)

    return [_test("similarity-cka", linear_cka, suspect, victim, references, "linear CKA"),
            _test("similarity-procrustes", procrustes, suspect, victim, references,
                  "held-out Procrustes cosine")]
