"""Ownership verification: is a suspect encoder derived from the owner's? The calibrated
membership test, the result record every ownership test returns, and their combination.

The owner holds samples of their training data (members) and of data they held out
(non-members), drawn as a random split of one pool. A suspect derived from their encoder
(stolen by queries, fine-tuned from its weights) inherits some of what the encoder memorised
about its members; an independently trained encoder knows nothing of the split.

**Per-sample calibrated membership tests** (:func:`calibrated_membership_test`), on two
statistics, each computed on the suspect and on R reference encoders that never saw the
owner's data:

- ``calibrated-membership``: EncoderMI's (Liu et al., CCS 2021) view consistency -- the mean
  pairwise cosine of the embeddings of K augmented views of an image
  (:func:`view_consistency`; K = 10 and SimCLR's views by default, the paper's), for the
  *same* seeded views of every image (drawn once, embedded by every encoder). It reads the
  augmentation invariance the victim learnt on its members: what a fine-tuned copy keeps,
  and what a copy stolen with clean queries, which never saw an augmented member, mostly
  does not.
- ``calibrated-isolation``: how far an image's clean embedding lies from the other owner
  images' (:func:`isolation`: minus the mean cosine to its k nearest owner images, k =
  ceil(sqrt(N))). A contrastive encoder pushes its training images apart from each other
  (every other member is a negative of every member), so members end up more isolated; a
  copy that reproduces the victim's clean embeddings inherits their positions. The
  statistic of an image depends on the other images only through the unlabelled set, so
  the validity argument below holds unchanged.

Each image's score is calibrated against the references::

    z(x) = (s_suspect(x) - mean_r s_r(x)) / sd(x)

so an image that is easy (or atypical) for every encoder (a plain background, a centred
object) carries no weight. ``sd(x)`` is the references' per-image standard deviation
moderated toward the pooled one (``sd(x)^2 = ((R - 1) v(x) + d0 v_pool) / (R - 1 + d0)``,
prior weight ``d0 = 4``, as in limma's moderated t): with 2-4 references a per-image standard
deviation alone is too noisy to divide by. With one reference the score is the plain
difference (``sd = 1``). The set-level test is a one-sided Mann-Whitney U of the members' z
against the non-members' (exact without ties up to 40,000 pairs, normal with tie correction
beyond: :func:`mann_whitney_p`).

Validity: with a random owner split and a suspect that does not depend on the split (it
never used the owner's encoder or training data), the calibrated scores are a function of the
images, the suspect and the references and never of the labels (the pooled variance and the
isolation's neighbours are symmetric in all images), so members' and non-members' scores are
exchangeable and the rank test is valid for any number of references, even a poor choice of
them. References only add power: they remove the image difficulty every encoder shares,
which otherwise (with 300 + 300 images) lets one unlucky split make members look "easier" to
*every* encoder and flag all of them together. What it does not cover: held-out data that is
not a random part of the same pool (newer images, another source), where members and
non-members differ for every encoder in ways references only partly remove. A suspect trained
on the owner's training images themselves (a leaked data set) is flagged too: the tests
detect use of the owner's data as much as of the owner's encoder.

**Combination** (:func:`combine_tests`). The rule is fixed before any data is seen: the
global null ("the suspect is not derived") is tested by Holm-Bonferroni over the tests run,
whose first step is Bonferroni's: combined ``p = min(1, k * min p_i)``; verdict ``derived``
when ``p <= alpha``, else ``not shown`` (never "independent": failing to show a copy is not
evidence of independence). A test whose smallest attainable p-value exceeds ``alpha / k`` can
never reject and is left out of the family before the data are seen (Tarone 1990, "A modified
Bonferroni method for discrete data"): a reference-rank test with R references cannot go below
``1 / (R + 1)``, so with 4 references (p >= 0.2) it is run and shown but not combined at
alpha = 0.01. ``k`` is Tarone's: the smallest k with at most k tests able to reach
``alpha / k``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.data.stream import Images, image_batches
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.permutation import mann_whitney_p
from leakprobe.progress import query_task, source_of, task
from leakprobe.views import ViewSpec, attack_views

__all__ = [
    "DEFAULT_VIEWS_PER_IMAGE",
    "OWNERSHIP_TESTS",
    "PRIOR_DF",
    "VERDICTS",
    "Combination",
    "OwnershipTest",
    "calibrate",
    "calibrated_membership_test",
    "clean_embeddings",
    "combine_tests",
    "isolation",
    "parse_tests",
    "view_consistency",
]

DEFAULT_VIEWS_PER_IMAGE = 10  # EncoderMI's n
PRIOR_DF = 4.0  # weight (in references) of the pooled variance in each image's sd
VIEW_CHUNK = 64  # images whose views are drawn and embedded together
VERDICTS = ("derived", "not shown")
# Every ownership test by name, in report order (the workflow runs those it can).
OWNERSHIP_TESTS = ("calibrated-membership", "calibrated-isolation", "similarity-cka",
                   "similarity-procrustes", "dataset-inference")


def parse_tests(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"`` or a comma list of :data:`OWNERSHIP_TESTS` -> names in report order.

    Raises:
        LeakprobeError: an unknown name (naming the known ones) or an empty list.
    """
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)
             if t.strip()]
    if names == ["all"]:
        return OWNERSHIP_TESTS
    unknown = [n for n in names if n not in OWNERSHIP_TESTS]
    if unknown or not names:
        raise LeakprobeError(f"--tests: unknown test(s) {', '.join(unknown) or '(none)'}; "
                             f"known: all, {', '.join(OWNERSHIP_TESTS)}")
    return tuple(n for n in OWNERSHIP_TESTS if n in names)


@dataclass(frozen=True, kw_only=True)
class OwnershipTest:
    """One ownership test's outcome (``tests[i]`` of the report).

    Attributes:
        name: one of :data:`OWNERSHIP_TESTS`.
        statistic: the observed statistic (None: not run).
        p_value: one-sided p-value of "the suspect is not derived" (None: not run).
        references: reference encoders the test used (its null or its calibration).
        min_p: the smallest p-value the test can give (``1 / (R + 1)`` for a reference-rank
            test, 0 for the others): what Tarone's rule reads.
        skipped: why it did not run (None: it ran).
        details: test-specific numbers (reference values, sample sizes...).
    """

    name: str
    statistic: float | None
    p_value: float | None
    references: int
    min_p: float = 0.0
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return self.skipped is None and self.p_value is not None

    @classmethod
    def skip(cls, name: str, reason: str, references: int = 0) -> OwnershipTest:
        return cls(name=name, statistic=None, p_value=None, references=references,
                   skipped=reason)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statistic": self.statistic, "p_value": self.p_value,
                "references": self.references, "ran": self.ran, "skipped": self.skipped,
                "min_p": self.min_p, **self.details}


# ---- the statistic ---------------------------------------------------------------------------


def _mean_pairwise_cosine(views: torch.Tensor) -> torch.Tensor:
    """(B, K, D) embeddings -> (B,) mean cosine over the K(K-1)/2 view pairs."""
    z = F.normalize(views.double(), dim=-1)
    k = views.shape[1]
    gram = z @ z.transpose(1, 2)
    return (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (k * (k - 1))


def view_consistency(
    encoders: Sequence[Any],
    images: Images,
    *,
    n_views: int = DEFAULT_VIEWS_PER_IMAGE,
    views: str | dict | ViewSpec | None = None,
    seed: int = 0,
    size: int | None = None,
    chunk: int = VIEW_CHUNK,
) -> np.ndarray:
    """EncoderMI's statistic of every image on every encoder, from the same views.

    The views of each chunk of ``chunk`` images are drawn once, from one generator seeded
    ``seed`` (so they depend on the images' order and nothing else), and embedded by every
    encoder in turn: every encoder sees exactly the same views of every image.

    Args:
        encoders: targets with ``embed`` (the suspect, references, the victim).
        images: (N, 3, H, W) in [0, 1], a tensor or a streamed set.
        n_views: views per image, K >= 2.
        views: the view recipe (:func:`leakprobe.views.parse_views`; None: SimCLR's).
        seed: seeds the views.
        size: the views' side (default: the first encoder's ``input_size``).
        chunk: images per draw.
    Returns:
        (E, N) float64: the mean pairwise cosine of each image's K view embeddings.
    """
    if n_views < 2:
        raise LeakprobeError(f"--views-per-image must be >= 2 (pairs of views), got {n_views}")
    side = int(size or encoders[0].input_size)
    aug = attack_views(views, (0.08, 1.0)).augmentation(side)
    g = torch.Generator().manual_seed(int(seed))
    out: list[list[torch.Tensor]] = [[] for _ in encoders]
    # every encoder's queries, counted as each of its model batches is answered
    total = int(images.shape[0]) * n_views * len(encoders)
    with torch.inference_mode(), task(f"views: {n_views} per image, {len(encoders)} encoders",
                                      total, "queries"):
        for x in image_batches(images, chunk, side):
            v = aug(x, g, n_views)
            b = v.shape[0]
            flat = v.reshape(b * n_views, *v.shape[2:])
            for e, enc in enumerate(encoders):
                emb = enc.embed(flat).float().reshape(b, n_views, -1)
                out[e].append(_mean_pairwise_cosine(emb))
    return np.stack([torch.cat(o).numpy() for o in out]).astype(np.float64)


def clean_embeddings(encoder: Any, images: Images, *, size: int | None = None,
                     chunk: int = 256) -> torch.Tensor:
    """(N, D) float32 embeddings of the images themselves (no augmentation)."""
    side = size or encoder.input_size
    name = getattr(encoder, "name", "") or "encoder"
    with torch.inference_mode(), query_task(f"clean images: querying {name}",
                                            int(images.shape[0]), source_of(encoder)):
        parts = [encoder.embed(x).float() for x in image_batches(images, chunk, side)]
    return torch.cat(parts) if parts else torch.empty(0)


def isolation(embeddings: torch.Tensor, *, k: int | None = None) -> np.ndarray:
    """Minus the mean cosine of each image's embedding to its ``k`` nearest other images.

    Args:
        embeddings: (N, D) one encoder's clean embeddings of all the owner's images
            (members and non-members together: the statistic never sees the labels).
        k: neighbours (default ``ceil(sqrt(N))``, at most N - 1).
    Returns:
        (N,) float64; higher: farther from the other images.
    """
    n = int(embeddings.shape[0])
    if n < 2:
        raise LeakprobeError("isolation needs at least 2 images")
    k = min(int(k or math.ceil(math.sqrt(n))), n - 1)
    z = F.normalize(embeddings.double(), dim=1)
    gram = z @ z.T
    gram.fill_diagonal_(-math.inf)
    return (-gram.topk(k, dim=1).values.mean(1)).numpy()


# ---- calibration and the membership test -----------------------------------------------------


def calibrate(suspect: np.ndarray, references: np.ndarray, *, prior_df: float = PRIOR_DF
              ) -> np.ndarray:
    """Per-image calibrated scores ``(s - mean_refs) / sd`` (see the module docstring).

    Args:
        suspect: (N,) the suspect's statistic.
        references: (R, N) the references' statistics of the same images, R >= 1.
        prior_df: weight of the pooled variance in each image's (moderated) variance.
    Returns:
        (N,) float64 calibrated scores (higher: more member-like on the suspect than on the
        references). One reference, or references that agree exactly: plain differences.
    """
    s = np.asarray(suspect, dtype=np.float64).reshape(-1)
    r = np.asarray(references, dtype=np.float64).reshape(-1, s.size)
    if r.shape[0] < 1:
        raise LeakprobeError("calibration needs at least one reference encoder")
    diff = s - r.mean(axis=0)
    if r.shape[0] == 1:
        return diff
    dof = r.shape[0] - 1
    var = r.var(axis=0, ddof=1)
    pooled = float(var.mean())
    if not pooled > 1e-24:
        return diff
    moderated = (dof * var + prior_df * pooled) / (dof + prior_df)
    return diff / np.sqrt(np.maximum(moderated, 1e-12 * pooled))


def _auc(scores: np.ndarray, is_member: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n1 = int(is_member.sum())
    n0 = is_member.size - n1
    return float((ranks[is_member].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def calibrated_membership_test(
    suspect: np.ndarray,
    references: np.ndarray,
    is_member: np.ndarray,
    *,
    prior_df: float = PRIOR_DF,
    name: str = "calibrated-membership",
    statistic: str = "mean pairwise view cosine",
) -> OwnershipTest:
    """One-sided test that the suspect's calibrated scores are higher on members.

    Args:
        suspect: (N,) the suspect's statistic (:func:`view_consistency`, :func:`isolation`).
        references: (R, N) the references' statistics of the same images.
        is_member: (N,) True for the owner's training images.
        prior_df: see :func:`calibrate`.
        name: the test's name in the report.
        statistic: what the per-image statistic is, for the report.
    Returns:
        The test: ``statistic`` is the AUC of the calibrated scores (members vs
        non-members; 0.5 = no signal), ``p_value`` the one-sided Mann-Whitney p-value;
        ``details`` add the uncalibrated AUC and p-value (the suspect's statistic alone, for
        comparison: not combined) and the mean calibrated score per side.
    """
    y = np.asarray(is_member, dtype=bool).reshape(-1)
    s = np.asarray(suspect, dtype=np.float64).reshape(-1)
    r = np.asarray(references, dtype=np.float64).reshape(-1, s.size)
    if y.size != s.size:
        raise LeakprobeError(f"{s.size} statistics for {y.size} membership labels")
    if y.all() or not y.any():
        raise LeakprobeError("the membership test needs members and non-members")
    z = calibrate(s, r, prior_df=prior_df)
    p, method = mann_whitney_p(z, y)
    raw_p, _ = mann_whitney_p(s, y)
    return OwnershipTest(
        name=name, statistic=_auc(z, y), p_value=p, references=int(r.shape[0]),
        details={"statistic_name": f"AUC of calibrated {statistic}",
                 "p_value_method": method, "per_image_statistic": statistic,
                 "uncalibrated_auc": _auc(s, y), "uncalibrated_p_value": raw_p,
                 "mean_score_members": float(z[y].mean()),
                 "mean_score_nonmembers": float(z[~y].mean()),
                 "n_members": int(y.sum()), "n_nonmembers": int((~y).sum())})


# ---- combination -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    """The verdict of a set of tests under Holm-Bonferroni with Tarone's family.

    Attributes:
        p_value: ``min(1, k * min p)`` over the family (1.0 when the family is empty).
        verdict: ``derived`` (``p_value <= alpha``) or ``not shown``.
        k: Tarone's k (the Bonferroni multiplier); 0 with no test run.
        family: names of the tests combined.
        adjusted: Holm-adjusted p-value of each test in the family.
        left_out: name -> why a test that ran was not combined.
    """

    p_value: float
    verdict: str
    k: int
    family: tuple[str, ...]
    adjusted: dict[str, float]
    left_out: dict[str, str]


def _tarone_k(min_ps: Sequence[float], alpha: float) -> int:
    """Smallest k >= 1 with at most k tests whose smallest p-value can reach alpha / k."""
    for k in range(1, len(min_ps) + 1):
        if sum(m <= alpha / k for m in min_ps) <= k:
            return k
    return max(len(min_ps), 1)


def combine_tests(tests: Sequence[OwnershipTest], *, alpha: float) -> Combination:
    """Combine the tests that ran (see the module docstring).

    Args:
        tests: every test, run or skipped (skipped ones are ignored).
        alpha: the level of the verdict, in (0, 1).
    Returns:
        The :class:`Combination`.
    """
    if not 0.0 < alpha < 1.0:
        raise LeakprobeError(f"alpha must lie in (0, 1), got {alpha}")
    ran = [t for t in tests if t.ran]
    if not ran:
        return Combination(1.0, "not shown", 0, (), {}, {})
    k = _tarone_k([t.min_p for t in ran], alpha)
    family = [t for t in ran if t.min_p <= alpha / k]
    left_out = {t.name: (f"cannot reach alpha/k = {alpha / k:.3g}: its smallest p-value is "
                         f"{t.min_p:.3g}") for t in ran if t not in family}
    ordered = sorted(family, key=lambda t: float(t.p_value or 1.0))
    adjusted: dict[str, float] = {}
    running = 0.0
    for j, t in enumerate(ordered):
        running = max(running, min(1.0, (k - j) * float(t.p_value or 1.0)))
        adjusted[t.name] = running
    p = min(1.0, k * min(float(t.p_value or 1.0) for t in family)) if family else 1.0
    verdict = "derived" if p <= alpha and family else "not shown"
    return Combination(p, verdict, k, tuple(t.name for t in family), adjusted, left_out)

