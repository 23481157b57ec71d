"""Per-sample calibration of a membership statistic against reference models (pure numpy).

A statistic s_m(x) is one number per sample and model (EncoderMI's mean view cosine, an
embedding norm...). A global threshold on s_T(x) confuses "the model trained on x" with "x is
an easy sample for every model". Reference models that did (IN) or did not (OUT) train on x
tell the two apart: the attacks below compare the target's statistic with the same sample's
statistic on the references.

- **LiRA** (Carlini et al., IEEE S&P 2022, "Membership Inference Attacks From First
  Principles"). Offline: a Gaussian N(mu_out(x), sigma_out^2) is fitted to the OUT
  references' statistics of x, and the score is the one-sided standardised distance
  ``d * (s_T(x) - mu_out(x)) / sigma_out`` (its rank equals the paper's one-sided p-value's).
  Online: Gaussians for IN and OUT, score = log N(s_T; IN) - log N(s_T; OUT). As in the paper,
  the variance is global (pooled over samples) when references are few; here when a sample
  has fewer than :data:`PER_SAMPLE_VARIANCE_MIN` references on a side.
- **RMIA** (Zarifzadeh et al., ICML 2024, "Low-Cost High-Power Membership Inference
  Attacks"). ``LR(x, z) = (Pr(x|T) / Pr(x)) / (Pr(z|T) / Pr(z))`` against population samples
  z; the score of x is the fraction of z with ``LR(x, z) > gamma`` (gamma = 1 by default;
  ties of that fraction, frequent with a finite population, are broken by ``Pr(x|T)/Pr(x)``,
  of which it is a step function).
  Pr(x) is the mean of Pr(x|ref) over the references; offline (OUT references only) it is the
  paper's approximation ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2``, with ``a`` chosen as the
  paper does, by attacking each reference with the others (:func:`tune_rmia_a`).
  RMIA is defined on a classifier's probability of the true label; for an encoder statistic
  leakprobe uses ``Pr(x|m) = Phi(d * (s_m(x) - mean_m) / sd_m)``, the statistic standardised
  over the population samples on that model (so models of different scale compare) and mapped
  into (0, 1) by the normal CDF. That mapping is leakprobe's adaptation, stated in reports.

``d`` is the statistic's member direction (+1: members score higher). A statistic whose
direction no paper fixes (embedding norms, PartCrop's KL scores) gets it from the references:
the sign of the mean IN-minus-OUT difference on population samples (:func:`estimate_direction`),
never from audited labels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

PER_SAMPLE_VARIANCE_MIN = 32  # references per side for a per-sample variance (LiRA: 64+)
STD_FLOOR = 1e-8
RMIA_A_GRID = tuple(round(0.1 * k, 1) for k in range(11))


def _pooled_std(stats: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> float:
    resid = np.nan_to_num((stats - mean[None]) * mask)
    count = max(int(mask.sum()) - int((mask.sum(0) > 0).sum()), 1)
    return max(math.sqrt(float((resid ** 2).sum()) / count), STD_FLOOR)


def _side(stats: np.ndarray, mask: np.ndarray, allow_empty: bool = False
          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean and std of ``stats`` (R, N) over the references in ``mask`` (R, N).

    A sample without a reference in ``mask`` gets a NaN mean when ``allow_empty``.
    """
    count = mask.sum(0)
    if (count == 0).any() and not allow_empty:
        raise ValueError("every sample needs at least one reference on each side used")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (stats * mask).sum(0) / count
    if count.min() >= PER_SAMPLE_VARIANCE_MIN:
        var = (((stats - mean[None]) * mask) ** 2).sum(0) / np.maximum(count - 1, 1)
        std = np.maximum(np.sqrt(var), STD_FLOOR)
    else:
        std = np.full(mean.shape, _pooled_std(stats, mask, mean))
    return mean, std


def lira_offline(target: np.ndarray, references: np.ndarray, out_mask: np.ndarray,
                 direction: int) -> np.ndarray:
    """Offline LiRA scores (higher = member).

    Args:
        target: (N,) the statistic of each sample on the target.
        references: (R, N) the statistic of each sample on each reference.
        out_mask: (R, N) True where reference r did not train on sample i.
        direction: +1 when members score higher, -1 when lower.
    """
    mean, std = _side(references, out_mask.astype(float))
    return direction * (target - mean) / std


def lira_online(target: np.ndarray, references: np.ndarray, in_mask: np.ndarray) -> np.ndarray:
    """Online LiRA: log N(s_T; IN) - log N(s_T; OUT) per sample (higher = member).

    A sample that no reference trained on (or every reference did; random halves leave a few
    when R is small) gets the missing side's mean from its other side shifted by the mean
    IN - OUT difference of the samples that have both.
    """
    m = in_mask.astype(float)
    mu_in, sd_in = _side(references, m, allow_empty=True)
    mu_out, sd_out = _side(references, 1.0 - m, allow_empty=True)
    both = np.isfinite(mu_in) & np.isfinite(mu_out)
    if not both.any():
        raise ValueError("online LiRA needs samples with both IN and OUT references")
    shift = float((mu_in[both] - mu_out[both]).mean())
    mu_in = np.where(np.isfinite(mu_in), mu_in, mu_out + shift)
    mu_out = np.where(np.isfinite(mu_out), mu_out, mu_in - shift)
    log_in = -0.5 * ((target - mu_in) / sd_in) ** 2 - np.log(sd_in)
    log_out = -0.5 * ((target - mu_out) / sd_out) ** 2 - np.log(sd_out)
    return log_in - log_out


def estimate_direction(population: np.ndarray, in_mask: np.ndarray) -> int:
    """+1 when the references' IN population samples score higher than their OUT ones."""
    m = in_mask.astype(bool)
    if not m.any() or m.all():
        return 1
    diff = float(population[m].mean() - population[~m].mean())
    return 1 if diff >= 0 else -1


def likelihood(stats: np.ndarray, population: np.ndarray, direction: int) -> np.ndarray:
    """Pr(x | model) for RMIA: Phi of the statistic standardised over the population samples.

    Args:
        stats: (..., N) statistics of the scored samples on one model (or (R, N), one row
            per model, with ``population`` (R, M)).
        population: (M,) or (R, M) the same statistic of the population samples.
        direction: the member direction.
    """
    pop = np.atleast_2d(population)
    mean = pop.mean(-1, keepdims=True)
    sd = np.maximum(pop.std(-1, keepdims=True), STD_FLOOR)
    z = direction * (np.atleast_2d(stats) - mean) / sd
    out = ndtr(z)
    return out.reshape(np.shape(stats))


def rmia_scores(p_target: np.ndarray, p_refs: np.ndarray, out_mask: np.ndarray | None,
                pz_target: np.ndarray, pz_refs: np.ndarray, a: float = 1.0,
                gamma: float = 1.0) -> np.ndarray:
    """RMIA: the fraction of population samples z with LR(x, z) > gamma, per sample x.

    Args:
        p_target: (N,) Pr(x | target).
        p_refs: (R, N) Pr(x | reference).
        out_mask: (R, N) OUT references of each x (offline, with the ``a`` approximation);
            None: all references are used as they are (online: IN and OUT).
        pz_target: (M,) Pr(z | target) of the population samples.
        pz_refs: (R, M) Pr(z | reference).
        a: the offline approximation's parameter.
        gamma: the likelihood-ratio threshold.
    """
    if out_mask is None:
        px = p_refs.mean(0)
    else:
        m = out_mask.astype(float)
        p_out = (p_refs * m).sum(0) / np.maximum(m.sum(0), 1)
        px = 0.5 * ((1.0 + a) * p_out + (1.0 - a))
    pz = pz_refs.mean(0)
    ratio_x = p_target / np.maximum(px, 1e-30)
    ratio_z = np.sort(pz_target / np.maximum(pz, 1e-30))
    # LR(x, z) > gamma  <=>  ratio_z < ratio_x / gamma
    count = np.searchsorted(ratio_z, ratio_x / gamma, side="left")
    # The fraction is a step function of ratio_x: with finite z many x tie (every strong
    # member beats all z). Ties are broken by ratio_x itself, within the step, so the order
    # is RMIA's wherever the fraction differs.
    # (count + within) / (M + 1) stays in [0, 1).
    within = np.argsort(np.argsort(ratio_x, kind="stable"), kind="stable") / max(len(ratio_x), 1)
    return (count + within) / (len(ratio_z) + 1)


def tune_rmia_a(pz_refs: np.ndarray, in_z: np.ndarray, gamma: float = 1.0,
                grid: tuple[float, ...] = RMIA_A_GRID) -> float:
    """The offline ``a`` that attacks the references best (RMIA's own procedure).

    Each reference in turn is the target and the others its OUT references; the population
    samples, whose membership in every reference is known, are the candidates (and the z).
    Returns the ``a`` of highest mean AUC (1.0 with fewer than 3 references).
    """
    from leakprobe.evaluation.metrics import auc

    r = pz_refs.shape[0]
    if r < 3:
        return 1.0
    best, best_auc = 1.0, -1.0
    for a in grid:
        aucs = []
        for t in range(r):
            others = [k for k in range(r) if k != t]
            labels = in_z[t].astype(bool)
            if labels.all() or not labels.any():
                continue
            out = ~in_z[others].astype(bool)
            if (out.sum(0) == 0).any():
                continue
            scores = rmia_scores(pz_refs[t], pz_refs[others], out, pz_refs[t],
                                 pz_refs[others], a=a, gamma=gamma)
            aucs.append(auc(scores, labels))
        if aucs and float(np.mean(aucs)) > best_auc:
            best, best_auc = a, float(np.mean(aucs))
    return best
