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

- **Multivariate LiRA** (leakprobe's extension, not in the papers): K statistics of a sample
  at once (:func:`lira_offline_multivariate`, :func:`lira_online_multivariate`). Each
  statistic is standardised exactly as the univariate LiRA does, and the K standardised
  residuals share one pooled correlation matrix (shrunk toward the identity), so statistics
  that merely repeat each other's reference noise, or that disagree across references, stop
  adding noise. With K = 1 both functions equal their univariate counterparts.

``d`` is the statistic's member direction (+1: members score higher). A statistic whose
direction no paper fixes (embedding norms, PartCrop's KL scores) gets it from the references:
the sign of the mean IN-minus-OUT difference on population samples (:func:`estimate_direction`),
never from audited labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


# ---- multivariate LiRA (leakprobe's extension) ------------------------------------------------

MV_SHRINKAGE_MIN = 1e-3  # least estimated shrinkage; least eigenvalue of the correlation


def _check_multivariate(target: np.ndarray, references: np.ndarray, mask: np.ndarray,
                        mask_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=float)
    refs = np.asarray(references, dtype=float)
    m = np.asarray(mask)
    if t.ndim != 2 or 0 in t.shape:
        raise ValueError("target must be (N, K): one row per sample, one column per statistic "
                         f"(K = 1 for one statistic); got shape {t.shape}")
    if refs.ndim != 3 or refs.shape[0] == 0 or refs.shape[1:] != t.shape:
        raise ValueError(f"references must be (R, N, K) = (R, {t.shape[0]}, {t.shape[1]}) with "
                         f"R >= 1, matching target {t.shape}; got shape {refs.shape}")
    if m.shape != refs.shape[:2]:
        raise ValueError(f"{mask_name} must be (R, N) = {refs.shape[:2]}, one flag per "
                         f"reference and sample; got shape {m.shape}")
    return t, refs, m.astype(bool)


def _standardise(refs: np.ndarray, mask: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per statistic, :func:`_side`'s mean and std over the references in ``mask`` (R, N).

    A NaN reference value is left out of its sample's statistic. Returns ``mean`` and ``std``
    (N, K; NaN mean where a sample has no usable reference), the standardised residuals
    (R, N, K; 0 where unused) and where they are used (R, N, K).
    """
    finite = np.isfinite(refs)
    used = mask[:, :, None] & finite
    clean = np.where(finite, refs, 0.0)
    mean = np.empty(refs.shape[1:])
    std = np.empty(refs.shape[1:])
    for k in range(refs.shape[2]):
        mean[:, k], std[:, k] = _side(clean[:, :, k], used[:, :, k].astype(float),
                                      allow_empty=True)
    used &= np.isfinite(mean)[None]
    with np.errstate(invalid="ignore"):
        resid = np.where(used, (clean - mean[None]) / std[None], 0.0)
    return mean, std, resid, used


def _correlation(resid: np.ndarray, used: np.ndarray, shrinkage: float | None) -> np.ndarray:
    """Pooled correlation (K, K) of standardised residuals, shrunk toward the identity.

    Pairwise over the entries where both statistics are used. ``shrinkage`` None: Schafer &
    Strimmer's (2005) estimate ``sum Var(r_jk) / sum r_jk^2`` (their target "D": correlations
    toward 0, variances kept), at least :data:`MV_SHRINKAGE_MIN`; eigenvalues are floored there
    too, so the matrix (and each principal submatrix) is invertible.
    """
    k = resid.shape[-1]
    corr = np.eye(k)
    var_r = np.zeros((k, k))
    for a in range(k):
        for b in range(a + 1, k):
            both = used[..., a] & used[..., b]
            ea, eb = resid[..., a][both], resid[..., b][both]
            denom = math.sqrt(float((ea ** 2).sum()) * float((eb ** 2).sum()))
            if ea.size < 2 or denom <= 0.0:
                continue  # a constant statistic correlates with nothing
            w = ea * eb
            corr[a, b] = corr[b, a] = float(w.sum()) / denom
            var_r[a, b] = var_r[b, a] = ea.size * float(w.var(ddof=1)) / denom ** 2
    if shrinkage is None:
        off = ~np.eye(k, dtype=bool)
        total = float((corr[off] ** 2).sum())
        lam = 1.0 if total == 0.0 else float(var_r[off].sum()) / total
        lam = min(max(lam, MV_SHRINKAGE_MIN), 1.0)
    else:
        lam = float(shrinkage)
    corr = (1.0 - lam) * corr + lam * np.eye(k)
    vals, vecs = np.linalg.eigh(corr)
    if vals.min() < MV_SHRINKAGE_MIN:
        corr = (vecs * np.maximum(vals, MV_SHRINKAGE_MIN)) @ vecs.T
    return corr


def _check_shrinkage(shrinkage: float | None) -> None:
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1] or None (estimated), got {shrinkage}")


def _by_pattern(present: np.ndarray,
                score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """``score(rows, cols)`` for each set of present statistics; 0 where none is present."""
    out = np.zeros(present.shape[0])
    patterns, inverse = np.unique(present, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for p, row in enumerate(patterns):
        if row.any():
            rows = np.flatnonzero(inverse == p)
            out[rows] = score(rows, np.flatnonzero(row))
    return out


def lira_offline_multivariate(target: np.ndarray, references: np.ndarray,
                              out_mask: np.ndarray, directions: np.ndarray, *,
                              shrinkage: float | None = None) -> np.ndarray:
    """Offline LiRA on K statistics at once (higher = member; leakprobe's extension).

    Each statistic k is standardised as :func:`lira_offline` does it, ``z_k(x) = (s_T,k(x) -
    mu_out,k(x)) / sigma_out,k(x)`` (per-sample mean; pooled std below
    :data:`PER_SAMPLE_VARIANCE_MIN` OUT references per sample, per-sample std from there),
    and the residuals share one correlation matrix C pooled over samples and OUT references
    (see ``shrinkage``). For a member shift ``delta`` (in std units) the Gaussian likelihood
    ratio of N(delta, C) against N(0, C) is monotone in the Fisher projection, the score::

        delta^T C^-1 z / sqrt(delta^T C^-1 delta)

    i.e. the whitened z projected on the whitened delta: N(0, 1) for non-members under the
    model, ``sign(delta) * z`` (= :func:`lira_offline`) when K = 1. Correlated statistics
    count once, and a statistic correlated with the others but without a shift cancels their
    shared reference noise. LiRA is Carlini et al. (IEEE S&P 2022); the multivariate Gaussian
    and this projection are leakprobe's extension.

    Args:
        target: (N, K) the K statistics of each sample on the target.
        references: (R, N, K) the same on each reference.
        out_mask: (R, N) True where reference r did not train on sample i.
        directions: (K,) the member shift ``delta`` of each statistic in its std units: +1/-1
            (the member direction; equal weight) or real values, e.g. :func:`estimate_shift`
            (weights by the references' evidence, so a statistic without signal drops out).
            0 (direction unknown) leaves the statistic out entirely (also of C): used as
            shift-free it could cancel a real signal.
        shrinkage: weight of the identity in C: None estimates it (Schafer & Strimmer 2005,
            at least :data:`MV_SHRINKAGE_MIN`), large when samples x references are few.

    A NaN reference value is left out of its sample's statistic; a NaN target value (or a
    statistic with no usable OUT reference) drops that statistic for that sample (the
    Gaussian's marginal on the rest), and a sample left with none scores 0, the non-members'
    mean. A constant statistic gets std :data:`STD_FLOOR` as in :func:`lira_offline`.
    """
    t, refs, out = _check_multivariate(target, references, out_mask, "out_mask")
    d = np.asarray(directions, dtype=float)
    if d.shape != (t.shape[1],) or not np.isfinite(d).all():
        raise ValueError(f"directions must be ({t.shape[1]},) finite, one per statistic; got "
                         f"shape {d.shape}")
    if not d.any():
        raise ValueError("at least one statistic needs a nonzero direction")
    _check_shrinkage(shrinkage)
    if (out.sum(0) == 0).any():
        raise ValueError("every sample needs at least one OUT reference")
    keep = d != 0
    t, refs, d = t[:, keep], refs[:, :, keep], d[keep]
    mean, std, resid, used = _standardise(refs, out)
    z = (t - mean) / std
    corr = _correlation(resid, used, shrinkage)

    def project(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        w = np.linalg.solve(corr[np.ix_(cols, cols)], d[cols])
        return z[np.ix_(rows, cols)] @ w / math.sqrt(float(d[cols] @ w))

    return _by_pattern(np.isfinite(z), project)


def lira_online_multivariate(target: np.ndarray, references: np.ndarray, in_mask: np.ndarray,
                             *, shrinkage: float | None = None) -> np.ndarray:
    """Online LiRA on K statistics: log N(s_T; IN) - log N(s_T; OUT) (leakprobe's extension).

    Each side is a Gaussian with per-sample means, the univariate std rule of
    :func:`lira_online` per statistic and one pooled, shrunk correlation matrix per side (as
    in :func:`lira_offline_multivariate`); K = 1 gives :func:`lira_online`. A sample without
    references on one side gets that side's mean from the other, shifted by the mean IN - OUT
    difference, per statistic. NaNs are handled as in :func:`lira_offline_multivariate`.

    Args:
        target: (N, K) the K statistics of each sample on the target.
        references: (R, N, K) the same on each reference.
        in_mask: (R, N) True where reference r trained on sample i.
        shrinkage: as in :func:`lira_offline_multivariate`.
    """
    t, refs, m = _check_multivariate(target, references, in_mask, "in_mask")
    _check_shrinkage(shrinkage)
    mu_in, sd_in, resid_in, used_in = _standardise(refs, m)
    mu_out, sd_out, resid_out, used_out = _standardise(refs, ~m)
    both = np.isfinite(mu_in) & np.isfinite(mu_out)
    if not both.any(0).all():
        raise ValueError("online LiRA needs, for every statistic, samples with both IN and OUT "
                         "references")
    shift = np.nanmean(np.where(both, mu_in - mu_out, np.nan), axis=0)
    mu_in = np.where(np.isfinite(mu_in), mu_in, mu_out + shift)
    mu_out = np.where(np.isfinite(mu_out), mu_out, mu_in - shift)
    z_in, z_out = (t - mu_in) / sd_in, (t - mu_out) / sd_out
    c_in = _correlation(resid_in, used_in, shrinkage)
    c_out = _correlation(resid_out, used_out, shrinkage)

    def log_density(z: np.ndarray, sd: np.ndarray, corr: np.ndarray) -> np.ndarray:
        quad = (z * np.linalg.solve(corr, z.T).T).sum(1)
        return -0.5 * quad - np.log(sd).sum(1) - 0.5 * np.linalg.slogdet(corr)[1]

    def llr(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rc, cc = np.ix_(rows, cols), np.ix_(cols, cols)
        return (log_density(z_in[rc], sd_in[rc], c_in[cc])
                - log_density(z_out[rc], sd_out[rc], c_out[cc]))

    return _by_pattern(np.isfinite(z_in) & np.isfinite(z_out), llr)


def estimate_shift(population_refs: np.ndarray, population_in: np.ndarray) -> np.ndarray:
    """(K,) the member shift of each statistic in its OUT std units, from the references.

    Per population sample and statistic, (mean over IN references - mean over OUT ones) /
    the OUT std (as :func:`lira_offline` standardises), averaged over the samples that have
    both sides. Pass it as ``directions`` of :func:`lira_offline_multivariate` to weight the
    statistics by their signal; it uses no audited label.

    Args:
        population_refs: (R, M, K) the statistics of the population samples on each reference.
        population_in: (R, M) True where reference r trained on population sample j.
    """
    refs = np.asarray(population_refs, dtype=float)
    if refs.ndim != 3:
        raise ValueError(f"population_refs must be (R, M, K), got shape {refs.shape}")
    _, refs, m = _check_multivariate(refs[0], refs, population_in, "population_in")
    mu_in = _standardise(refs, m)[0]
    mu_out, sd_out = _standardise(refs, ~m)[:2]
    diff = (mu_in - mu_out) / sd_out
    ok = np.isfinite(diff)
    if not ok.any(0).all():
        raise ValueError("estimating the shift needs, for every statistic, population samples "
                         "with both IN and OUT references")
    return np.nanmean(np.where(ok, diff, np.nan), axis=0)
