"""The audit protocol: fit and evaluation samples are always disjoint.

Two knowledge settings:

- ``known-subset``: the auditor knows the given members and non-members. The samples are
  split into K seeded folds stratified by membership; fold k is scored by an attack fitted on
  the other folds, so every sample gets one out-of-fold score and all samples count in the
  metrics. Each image is queried once: the attack's query-paying features are computed for
  all samples, and only its learned scorer is cross-fitted.
- ``shadow``: the attack is fitted on a shadow target's members and non-members (data the
  attacker owns) and scores every given sample of the real target.
- ``reference``: calibrated attacks (``lira-*``, ``rmia-*``) score every sample against
  reference encoders (:mod:`leakprobe.attacks.membership.calibrated`); nothing is fitted on
  the audited labels, so only attacks without a fit (and the blind floor, which measures the
  data and is cross-fitted as always) run.

Attacks are used through their methods only (``features``, ``fit_features``,
``score_features``, ``clone``, ``needs_fit``), so this module imports no attack.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from leakprobe.data.images import ImageSet, concat
from leakprobe.data.splits import check_disjoint
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.metrics import auc
from leakprobe.evaluation.permutation import (
    null_aucs_of_fixed_scores,
    permuted_labels,
    resolve_permutations,
)
from leakprobe.evaluation.plan import FeatureCache, PlanRunner, QueryPlan, build_plan
from leakprobe.evaluation.results import AttackResult, FitTask
from leakprobe.progress import log, query_task, source_of, task
from leakprobe.threads import single_threaded

if TYPE_CHECKING:
    from leakprobe.targets.protocols import Target

MIN_PER_SIDE = 20
KNOWLEDGE = ("known-subset", "shadow", "reference")
# Cross-fittings averaged per sample by default. One: the permutation test then redoes exactly
# the reported cross-fitting at 1/R of the cost, and its widened interval already carries the
# split noise that averaging R cross-fittings would reduce (``--repeats R`` still averages R,
# and the permutations then redo all R).
DEFAULT_REPEATS = 1


def check_audit_sets(members: ImageSet, nonmembers: ImageSet, min_per_side: int = MIN_PER_SIDE):
    """Refuse sets too small to measure, of different sizes, or that share images."""
    for side, s in (("members", members), ("non-members", nonmembers)):
        if len(s) < min_per_side:
            raise LeakprobeError(
                f"{side}: {len(s)} images; an audit needs at least {min_per_side} per side"
            )
    if members.shape[1:] != nonmembers.shape[1:]:
        raise LeakprobeError(
            "members and non-members must be preprocessed identically "
            f"(shapes {members.shape[1:]} vs {nonmembers.shape[1:]})"
        )
    check_disjoint(members, nonmembers)


def audit_queries(attacks: list, target, n_images: int) -> tuple[int, str]:
    """Queries ``attacks`` will send ``target`` for ``n_images`` audited images, explained.

    Counted from the audit's query plan (:func:`leakprobe.evaluation.plan.build_plan`): a
    request several attacks share (EncoderMI's three variants' views, the clean image) counts
    once. A shadow target is another model and is not counted.
    """
    plan = build_plan(attacks, target, n_images)
    how = f"{n_images} images x {plan.queries_per_image} per image"
    by_readers: dict[tuple[str, ...], int] = {}  # requests read by the same attacks, summed
    for r in plan.requests:
        readers = tuple(r.attacks)
        by_readers[readers] = by_readers.get(readers, 0) + r.request.queries_per_image()
    parts = [f"{'+'.join(readers)} {per}" for readers, per in by_readers.items()]
    parts += [f"{name} {per}" for name, (per, _) in plan.unplanned.items() if per]
    how += f": {', '.join(parts) or 'none'}"
    extra = sum(extra for _, extra in plan.unplanned.values())
    if extra:
        how += f"; + {extra} population-sample queries of calibrated attacks (at most)"
    return plan.total_queries, how


def check_audit_plan(
    attacks: list,
    target,
    members: ImageSet,
    nonmembers: ImageSet,
    knowledge: str = "known-subset",
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    extra_queries: int = 0,
    extra_what: str = "",
) -> int:
    """Everything an audit can fail on, checked before it trains or queries anything.

    The sets (sizes, shapes, overlap), the protocol (knowledge, folds, repeats) and the
    target's query budget against what the attacks will need (plus ``extra_queries``, e.g.
    utility images, described by ``extra_what``).

    Returns:
        The queries the audit will make (``extra_queries`` included).
    Raises:
        LeakprobeError: one line naming the problem, e.g. "this audit needs 1920 queries
            (...); the target's budget allows 500: ...".
    """
    from leakprobe.preflight import check_query_budget

    if knowledge not in KNOWLEDGE:
        raise LeakprobeError(f"--knowledge must be one of {', '.join(KNOWLEDGE)}, "
                             f"got {knowledge!r}")
    if knowledge == "reference":
        fitted = [a.name for a in attacks if a.needs_fit and not a.model_free]
        if fitted:
            raise LeakprobeError(
                f"{', '.join(fitted)} fit on known samples: under --knowledge reference run "
                "calibrated attacks (lira-*, rmia-*; alias calibrated) or ones that fit "
                "nothing (`leakprobe attacks` shows the knowledge each runs under)")
    else:
        calibrated = [a.name for a in attacks if a.needs_references]
        if calibrated:
            raise LeakprobeError(f"{', '.join(calibrated)} need --knowledge reference")
    if repeats < 1:
        raise LeakprobeError(f"--repeats must be >= 1, got {repeats}")
    crossfitted = [a for a in attacks if knowledge == "known-subset" or not a.needs_fit
                   or a.model_free]
    if crossfitted:
        if folds < 2:
            raise LeakprobeError(f"--folds must be >= 2, got {folds}")
        smaller = min(len(members), len(nonmembers))
        if smaller < folds:
            raise LeakprobeError(f"{smaller} samples in a class cannot fill {folds} folds")
    check_audit_sets(members, nonmembers)
    needed, how = audit_queries(attacks, target, len(members) + len(nonmembers))
    needed += extra_queries
    if extra_queries:
        how += f"; + {extra_queries} {extra_what or 'other'} queries"
    tunable = any(a.query_options for a in attacks)
    hint = ("lower --n-views/--num-parts, use fewer attacks or images" if tunable
            else "use fewer attacks or images")
    check_query_budget(target, needed, f"this audit needs {needed} queries ({how})", hint)
    return needed


def stratified_folds(is_member: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index of every sample: K folds, seeded, each with both classes."""
    if k < 2:
        raise LeakprobeError(f"--folds must be >= 2, got {k}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(is_member), dtype=int)
    for cls in (True, False):
        idx = np.flatnonzero(is_member == cls)
        if len(idx) < k:
            raise LeakprobeError(f"{len(idx)} samples in a class cannot fill {k} folds")
        rng.shuffle(idx)
        folds[idx] = np.arange(len(idx)) % k
    return folds


def _stack(members: ImageSet, nonmembers: ImageSet) -> tuple[ImageSet, np.ndarray, list]:
    samples = concat([members, nonmembers])
    is_member = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    return samples, is_member, members.ids + nonmembers.ids


def shuffled_features(attack, target, samples: ImageSet, seed: int) -> np.ndarray:
    """Features of ``samples`` computed in a seeded random order, returned in input order.

    Members and non-members are interleaved before querying, so nothing that depends on the
    position of an image in the query stream (batches, random draws) can separate them.
    Attacks with ``sample_kind == "pairs"`` get the ImageSet (inputs and ground-truth
    outputs), the others the images (a tensor, or a :class:`~leakprobe.data.stream.LazyImages`
    that they read batch by batch).
    """
    perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
    batch = samples.subset(perm) if attack.sample_kind == "pairs" else \
        samples.subset(perm).pixels
    total = attack.queries_per_image(target) * len(samples) + int(attack.extra_queries(target))
    with query_task(f"{attack.name}: querying", total, source_of(target)):
        feats = attack.features(target, batch)
    out = np.empty_like(feats)
    out[perm.numpy()] = feats
    return out


def crossfit_tasks(labels: np.ndarray, folds: int, seed: int, repeats: int) -> list[FitTask]:
    """The fits of one cross-fitted scoring: ``repeats`` seeded K-fold splits of ``labels``."""
    tasks = []
    for r in range(max(repeats, 1)):
        fold = stratified_folds(labels, folds, seed + r)
        for k in range(folds):
            test = fold == k
            tasks.append(FitTask(np.flatnonzero(~test), labels[~test], np.flatnonzero(test)))
    return tasks


def crossfit_scores(attack, feats: np.ndarray, labels: np.ndarray, folds: int, seed: int,
                    repeats: int) -> np.ndarray:
    """Out-of-fold scores (L, N) of ``attack`` for each label vector of ``labels`` (L, N).

    Row 0 is normally the true labels and the others permutations; every row goes through
    exactly the same procedure (folds drawn from the same seeds, scorers refitted with the
    same recipe), and all fits are handed to the attack at once so that small networks
    train together (:meth:`MembershipAttack.fit_score_tasks`).
    """
    n_rep = max(repeats, 1)
    per_row = n_rep * folds
    scores = np.zeros(labels.shape, dtype=np.float64)
    # Rows in groups so that progress moves and memory stays bounded.
    rows_per_call = max(1, 64 // per_row)
    with task(f"{attack.name}: cross-fitting", labels.shape[0] * per_row, "fits") as bar:
        for start in range(0, labels.shape[0], rows_per_call):
            rows = range(start, min(start + rows_per_call, labels.shape[0]))
            tasks = [t for i in rows for t in crossfit_tasks(labels[i], folds, seed, repeats)]
            out = attack.fit_score_tasks(feats, tasks)
            for j, i in enumerate(rows):
                for t, sc in zip(tasks[j * per_row:(j + 1) * per_row],
                                 out[j * per_row:(j + 1) * per_row], strict=True):
                    scores[i, t.test] += np.asarray(sc, dtype=np.float64) / n_rep
            bar.advance(len(tasks))
    return scores


def crossfit(
    attack,
    target: Target,
    members: ImageSet,
    nonmembers: ImageSet,
    folds: int = 2,
    seed: int = 0,
    repeats: int = DEFAULT_REPEATS,
    permutations: int = 0,
    runner: AuditQueries | None = None,
) -> AttackResult:
    """Out-of-fold scores of ``attack`` on every member and non-member (known-subset).

    The learned scorer is cross-fitted ``repeats`` times with different seeded fold
    assignments and each sample's out-of-fold scores are averaged: one split's fitting noise
    (large for small audits) then moves the AUC less. The features are queried once.
    With ``permutations`` B > 0 the whole cross-fitted scoring is redone on the same
    features for B seeded label permutations (:mod:`leakprobe.evaluation.permutation`); the
    result carries their AUCs (``null_aucs``) for the p-value and the interval.
    ``runner`` (the audit's shared query plan on ``target`` in the order seeded by ``seed``)
    gives the features when present.
    """
    samples, is_member, ids = _stack(members, nonmembers)
    q0, t0 = _queries(target), time.time()
    feats = shuffled_features(attack, target, samples, seed) if runner is None \
        else runner.features_in_input_order(attack)
    queries = _queries(target) - q0 if runner is None else runner.queries_of(attack)
    first_folds = stratified_folds(is_member, folds, seed)
    permuted = permuted_labels(is_member, permutations, seed)
    if not attack.needs_fit:
        scores = attack.score_features(feats)
        null = null_aucs_of_fixed_scores(scores, permuted)
    else:
        labels = np.concatenate([is_member[None], permuted])
        all_scores = crossfit_scores(attack, feats, labels, folds, seed, repeats)
        scores = all_scores[0]
        null = np.array([auc(all_scores[i], labels[i]) for i in range(1, len(labels))])
    return AttackResult(
        attack.name, _params(attack), scores, is_member, ids,
        first_folds if attack.needs_fit else None, queries, time.time() - t0,
        null_aucs=null, refitted=bool(attack.needs_fit),
    )


def shadow_fit_score(
    attack,
    shadow_target: Target,
    shadow_members: ImageSet,
    shadow_nonmembers: ImageSet,
    target: Target,
    members: ImageSet,
    nonmembers: ImageSet,
    permutations: int = 0,
    seed: int = 0,
    runner: AuditQueries | None = None,
    shadow_runner: AuditQueries | None = None,
) -> AttackResult:
    """Fit on a shadow target's known samples, score every sample of the real target.

    The scorer never sees the audited labels, so its scores are fixed: the p-value is
    Mann-Whitney's, and ``permutations`` only records the permuted AUCs (for best-of-many).
    """
    t0 = time.time()
    fitted = attack.clone()
    if fitted.needs_fit:
        s_samples, s_member, _ = _stack(shadow_members, shadow_nonmembers)
        s_feats = shuffled_features(fitted, shadow_target, s_samples, 0) \
            if shadow_runner is None else shadow_runner.features_in_input_order(attack)
        with single_threaded(), task(f"{attack.name}: fitting on the shadow", 1, "fits") as b:
            fitted.fit_features(s_feats, s_member)
            b.advance()
    samples, is_member, ids = _stack(members, nonmembers)
    q0 = _queries(target)
    feats = shuffled_features(fitted, target, samples, 0) if runner is None \
        else runner.features_in_input_order(attack)
    queries = _queries(target) - q0 if runner is None else runner.queries_of(attack)
    scores = fitted.score_features(feats)
    null = null_aucs_of_fixed_scores(scores, permuted_labels(is_member, permutations, seed))
    return AttackResult(
        attack.name, _params(attack), scores, is_member, ids, None,
        queries, time.time() - t0, null_aucs=null, refitted=False,
    )


class AuditInterrupted(Exception):
    """Ctrl-C during an audit: the results of the attacks that finished, to be reported."""

    def __init__(self, results: list[AttackResult], unfinished: list[str]) -> None:
        super().__init__(f"interrupted; unfinished: {', '.join(unfinished)}")
        self.results = results
        self.unfinished = unfinished


class AuditQueries:
    """The shared query plan of an audit on one target, in one seeded query order.

    Members and non-members are stacked and put in the order seeded by ``order`` (as
    :func:`shuffled_features` does for one attack); every attack's features come from one
    :class:`~leakprobe.evaluation.plan.PlanRunner`, so a request several attacks share is paid
    once, and are returned in input order.
    """

    def __init__(self, attacks: list, target, members: ImageSet, nonmembers: ImageSet, *,
                 order: int, cache: FeatureCache | None = None, workers=None) -> None:
        samples, _, ids = _stack(members, nonmembers)
        self.perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(order))
        ordered = samples.subset(self.perm)
        self.samples = ordered
        self.attacks = attacks
        self.runner = PlanRunner(attacks, target, ordered.pixels, ids=ordered.ids, order=order,
                                 cache=cache, workers=workers)
        self.n = len(ids)

    @property
    def plan(self) -> QueryPlan:
        return self.runner.plan

    def features_in_input_order(self, attack) -> np.ndarray:
        if attack.sample_kind == "pairs":  # the ImageSet, not only its pixels
            target = self.runner.target
            total = attack.queries_per_image(target) * self.n
            with query_task(f"{attack.name}: querying", total, source_of(target)):
                feats = attack.features(target, self.samples)
        else:
            feats = self.runner.features(attack)
        out = np.empty_like(feats)
        out[self.perm.numpy()] = feats
        return out

    def queries_of(self, attack) -> int:
        """What the attack's features cost on their own (shared requests counted in full)."""
        per = self.plan.per_attack.get(attack.name, 0)
        return int(per * self.n + self.plan.unplanned.get(attack.name, (0, 0))[1])


def execution_order(attacks: list, plan: QueryPlan) -> list[int]:
    """Attack indices, cheapest request group first (the blind floor and the clean image's
    readers report within minutes; Ctrl-C then keeps the most results)."""
    cost: dict[str, float] = {}
    size = plan.input_size or 1
    for r in plan.requests:
        for name in r.attacks:
            cost[name] = max(cost.get(name, 0.0), r.request.relative_cost(size))
    for name, (per, _) in plan.unplanned.items():
        cost[name] = float(per)
    return sorted(range(len(attacks)), key=lambda i: cost.get(attacks[i].name, 0.0))


def run_audit(
    attacks: list,
    target: Target,
    members: ImageSet,
    nonmembers: ImageSet,
    knowledge: str = "known-subset",
    folds: int = 2,
    seed: int = 0,
    shadow: tuple[Target, ImageSet, ImageSet] | None = None,
    repeats: int = DEFAULT_REPEATS,
    permutations: int | None = 0,
    cache: FeatureCache | None = None,
    workers=None,
) -> list[AttackResult]:
    """Run every attack under one knowledge setting; one :class:`AttackResult` each.

    Every attack's queries come from one query plan (:mod:`leakprobe.evaluation.plan`): a
    request that several attacks share is paid once. Attacks run cheapest first; results come
    back in the order of ``attacks``.

    Args:
        attacks: attack objects (unfitted).
        target: the queried model.
        members, non-members: the evaluation samples (checked: >= 20 each, disjoint).
        knowledge: ``known-subset``, ``shadow`` or ``reference``.
        folds: cross-fitting folds (known-subset; the blind floor always).
        seed: fold assignment and query order.
        repeats: cross-fitting repetitions averaged per sample (known-subset).
        shadow: ``(shadow_target, shadow_members, shadow_nonmembers)`` for ``shadow``.
        permutations: label permutations of the test of "no leakage" (0: none).
        cache: keeps each attack's features on disk (a rerun resumes).
        workers: answers the plan's streamed requests on several processes
            (:class:`leakprobe.evaluation.workers.RayWorkers`).
    Raises:
        AuditInterrupted: on Ctrl-C, with the results of the attacks that finished.
    """
    check_audit_plan(attacks, target, members, nonmembers, knowledge, folds, repeats)
    unprepared = [a.name for a in attacks if a.needs_references and not a.prepared]
    if unprepared:
        raise LeakprobeError(f"{', '.join(unprepared)}: no reference encoders were given")
    permutations = resolve_permutations(permutations)
    if knowledge == "shadow" and shadow is None:
        raise LeakprobeError("knowledge 'shadow' needs a shadow target and its split")

    def crossfitted(a) -> bool:
        return knowledge in ("known-subset", "reference") or not a.needs_fit or a.model_free

    # one plan per (target, query order): cross-fitted attacks query in the order seeded by
    # ``seed``, shadow-fitted ones in order 0 (as each did on its own)
    on_target = [a for a in attacks if crossfitted(a)]
    fitted_on_shadow = [a for a in attacks if not crossfitted(a)]
    runners: dict[int, AuditQueries] = {}
    if seed == 0 or not fitted_on_shadow:
        runners[seed] = AuditQueries(attacks if seed == 0 else on_target, target, members,
                                     nonmembers, order=seed, cache=cache, workers=workers)
    else:
        runners[seed] = AuditQueries(on_target, target, members, nonmembers, order=seed,
                                     cache=cache, workers=workers)
        runners[0] = AuditQueries(fitted_on_shadow, target, members, nonmembers, order=0,
                                  cache=cache, workers=workers)
    shadow_runner = None
    if shadow is not None and fitted_on_shadow:
        shadow_runner = AuditQueries(fitted_on_shadow, shadow[0], shadow[1], shadow[2],
                                     order=0, cache=None)
    results: dict[int, AttackResult] = {}
    order = execution_order(attacks, runners[seed].plan)
    # the whole plan's queries on the target (shared requests once; a resumed audit's cached
    # features are not queried, so it may end below its total): the audit's time left
    # (the rate counts the scorer fits between queries, so the time left includes them)
    planned = sum(r.plan.total_queries for r in runners.values())
    try:
        with task("audit: queries", planned, "queries", source=source_of(target),
                  overall=True):
            for i in order:
                attack = attacks[i]
                log(f"attack {attack.name} ...")
                if crossfitted(attack):
                    res = crossfit(attack, target, members, nonmembers, folds, seed, repeats,
                                   permutations, runner=runners[seed])
                else:
                    if shadow is None:  # knowledge is "shadow" here, checked above
                        raise LeakprobeError("knowledge 'shadow' needs a shadow target "
                                             "and its split")
                    res = shadow_fit_score(attack, shadow[0], shadow[1], shadow[2], target,
                                           members, nonmembers, permutations, seed,
                                           runner=runners.get(0, runners[seed]),
                                           shadow_runner=shadow_runner)
                log(f"attack {res.attack}: {res.queries} queries, {res.seconds:.1f}s")
                results[i] = res
    except KeyboardInterrupt as e:
        done = [results[i] for i in range(len(attacks)) if i in results]
        raise AuditInterrupted(done, [a.name for j, a in enumerate(attacks)
                                      if j not in results]) from e
    return [results[i] for i in range(len(attacks))]


def audit_plan(attacks: list, target, n_images: int) -> QueryPlan:
    """The audit's query plan (what ``--dry-run`` prints)."""
    return build_plan(attacks, target, n_images)


def _queries(target) -> int:
    return int(getattr(target, "queries", 0))


def _params(attack) -> dict:
    params = attack.get_params()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
