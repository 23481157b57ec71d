"""Reference-calibrated membership attacks on encoders: LiRA and RMIA on per-sample statistics.

Under ``--knowledge reference`` every per-sample statistic of an encoder attack (EncoderMI's
mean view cosine, LpLA's norms, the baselines, PartCrop's scores, the SSLMem alignment, the
sample's own InfoNCE loss) is compared with the same sample's statistic on reference encoders
that did (online) or did not (offline) train on it (:mod:`leakprobe.evaluation.calibration`
has the formulas and the papers). Names say the method, the setting and the statistic:
``lira-encodermi``, ``lira-online-encodermi`` (references trained with and without each
candidate), ``rmia-lpla-p2``...

The scores use no audited label (nothing is fitted on the audit), so the p-value is the
permutation test of fixed scores. The references come from
:class:`~leakprobe.evaluation.references.ReferenceModels`, handed over by :meth:`prepare`;
they are local models, so their statistics cost no target query. The target pays its usual
queries for the candidates plus, once per statistic, the population samples' (RMIA's z and
the estimate of a statistic's direction). Each reference's queries (candidates and population)
show as a progress task of their own, ``lira-encodermi: reference 3/8 querying``; the
target's query task counts the target's queries only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from leakprobe.attacks.membership._common import MembershipAttack
from leakprobe.attacks.registry import create_attack, register_attack, route_options
from leakprobe.data.stream import Images
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation import calibration
from leakprobe.progress import query_task, source_of

METHODS = ("lira", "rmia")


@dataclass(frozen=True)
class Statistic:
    """A per-sample number an encoder attack computes, and which way members lean.

    Attributes:
        name: the statistic's name in attack names (``encodermi``).
        attack: the registered attack whose features hold it.
        reduce: ``first`` (column 0) or ``mean`` (mean over columns).
        direction: +1 members higher, -1 lower, 0 not fixed by the paper (estimated from the
            references' own members: :func:`~leakprobe.evaluation.calibration.estimate_direction`).
        in_aliases: whether ``lira`` / ``rmia`` / ``calibrated`` include it.
    """

    name: str
    attack: str
    reduce: str = "first"
    direction: int = 0
    in_aliases: bool = True

    def of(self, features: np.ndarray) -> np.ndarray:
        return features[:, 0] if self.reduce == "first" else features.mean(axis=1)


STATISTICS: dict[str, Statistic] = {s.name: s for s in (
    Statistic("encodermi", "encodermi-threshold", direction=1),  # views of members agree
    Statistic("sslmem", "sslmem", direction=1),  # minus the views' distance
    Statistic("infonce", "infonce", direction=1),  # minus the sample's contrastive loss
    Statistic("lpla-p1", "lpla-p1"),
    Statistic("lpla-p2", "lpla-p2"),
    Statistic("lpla-pinf", "lpla-pinf"),
    Statistic("baseline-norm", "baseline-norm"),
    Statistic("baseline-consistency", "baseline-consistency", direction=1),
    Statistic("partcrop-pooled", "partcrop-pooled", reduce="mean"),
    Statistic("partcrop", "partcrop", reduce="mean", in_aliases=False),  # needs tokens
)}


class CalibratedAttack(MembershipAttack):
    """LiRA or RMIA on one statistic, against reference encoders.

    Args:
        method: ``lira`` or ``rmia``.
        statistic: a key of :data:`STATISTICS`.
        n_views, num_parts, views: options of the underlying attack (None: its default).
        gamma: RMIA's likelihood-ratio threshold.
        rmia_a: RMIA's offline parameter (None: tuned on the references).
        seed: seeds the underlying attack's views and crops (the same for target and
            references, so every model sees the same views of a sample).
    """

    needs_fit = False
    needs_references = True
    #: Its features depend on the references and set its population state: never taken from
    #: the query cache (a resumed audit reuses the trained references, and queries again).
    cacheable: ClassVar[bool] = False
    #: The statistics this class calibrates, and the family of their base attacks.
    statistics: ClassVar[dict[str, Statistic]] = STATISTICS
    base_family: ClassVar[str] = "encoder"
    #: What the references are, in errors and notes.
    models_word: ClassVar[str] = "reference encoders"

    def __init__(self, method: str = "lira", statistic: str = "encodermi",
                 n_views: int | None = None, num_parts: int | None = None,
                 views: str | dict | None = None, gamma: float = 1.0,
                 rmia_a: float | None = None, seed: int = 0) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if statistic not in self.statistics:
            raise ValueError(f"unknown statistic {statistic!r}; known: "
                             f"{', '.join(self.statistics)}")
        self.method = method
        self.statistic = statistic
        self.n_views = n_views
        self.num_parts = num_parts
        self.views = views
        self.gamma = gamma
        self.rmia_a = rmia_a
        self.seed = seed
        self.base()  # a bad option fails here

    @property
    def name(self) -> str:
        online = getattr(self, "references_", None) is not None and self.references_.online
        return f"{self.method}{'-online' if online else ''}-{self.statistic}"

    def base(self) -> MembershipAttack:
        """The uncalibrated attack whose features carry the statistic."""
        stat = self.statistics[self.statistic]
        given = {k: v for k, v in (("n_views", self.n_views), ("num_parts", self.num_parts),
                                   ("views", self.views)) if v is not None}
        return create_attack(stat.attack, family=self.base_family, seed=self.seed,
                             **route_options(stat.attack, given, family=self.base_family))

    # -- references ---------------------------------------------------------------------------

    @property
    def prepared(self) -> bool:
        return getattr(self, "references_", None) is not None

    def prepare(self, public: Any) -> CalibratedAttack:
        """Take the :class:`~leakprobe.evaluation.references.ReferenceModels`."""
        if not hasattr(public, "statistic_of"):
            raise LeakprobeError(f"{self.name} needs {self.models_word} (--knowledge "
                                 "reference with --reference-data or --reference-model)")
        self.references_ = public
        return self

    def _references(self):
        if not self.prepared:
            raise LeakprobeError(f"{self.name} needs --knowledge reference ({self.models_word} "
                                 "to calibrate against)")
        return self.references_

    def queries_per_image(self, target) -> int:
        return int(self.base().queries_per_image(target))

    def query_share_key(self, target) -> tuple:
        """Calibrated attacks of one statistic and base settings share every answer (the
        references' statistic cache, :meth:`ReferenceModels.statistic_of`): the plan counts
        their queries once."""
        return ("calibrated", self.statistic, repr(sorted(self.base().get_params().items())))

    def extra_queries(self, target) -> int:
        """The population samples' queries (paid once per statistic and target)."""
        refs = getattr(self, "references_", None)
        if refs is None:
            return 0
        # the population's queries, and the base attack's own extras on both sets (a bank)
        return (len(refs.population) * self.queries_per_image(target)
                + 2 * int(self.base().extra_queries(target)))

    # -- features and scores ------------------------------------------------------------------

    def population_samples(self, references: Any) -> Any:
        """The population samples as the base attack takes them (here: their pixels)."""
        return references.population.pixels

    def features(self, target, images: Images) -> np.ndarray:
        """Columns: the target's statistic, then each reference's, then each reference's IN
        flag for the sample (1 = that reference trained on it)."""
        refs = self._references()
        stat = self.statistics[self.statistic]
        base = self.base()
        if self.statistic == "partcrop":
            from leakprobe.attacks.membership.partcrop import needs_tokens_error, token_problem

            for model in [target, *refs.encoders]:
                problem = token_problem(model)
                if problem is not None:
                    raise needs_tokens_error(self.name, problem)
        population = self.population_samples(refs)
        on_target = refs.statistic_of(stat, base, target, images)
        pop_target = refs.statistic_of(stat, base, target, population)
        per_ref: list[tuple[np.ndarray, np.ndarray]] = []
        n = len(images) + len(population)
        for i, model in enumerate(refs.encoders):
            # each reference's queries advance a task of their own, never the target's
            at_most = int(base.queries_per_image(model)) * n + 2 * int(base.extra_queries(model))
            with query_task(f"{self.name}: reference {i + 1}/{len(refs.encoders)} querying",
                            at_most, source_of(model)):
                per_ref.append((refs.statistic_of(stat, base, model, images),
                                refs.statistic_of(stat, base, model, population)))
        on_refs = np.stack([on for on, _ in per_ref])
        pop_refs = np.stack([pop for _, pop in per_ref])
        trained = refs.trained_on_mask(images)
        self.population_ = (pop_target, pop_refs, refs.population_in)
        return np.column_stack([on_target, on_refs.T, trained.T.astype(float)])

    def direction(self) -> int:
        """The statistic's member direction: the paper's, else the references' (IN vs OUT on
        their own training data), else 0 (unknown: LiRA scores both ways)."""
        fixed = self.statistics[self.statistic].direction
        if fixed:
            return fixed
        _, pop_refs, pop_in = self.population_
        if pop_in.any() and not pop_in.all():
            return calibration.estimate_direction(pop_refs, pop_in)
        return 0

    def score_features(self, features: np.ndarray) -> np.ndarray:
        r = (features.shape[1] - 1) // 2
        target, refs = features[:, 0], features[:, 1:1 + r].T
        trained = features[:, 1 + r:].T > 0.5
        online = self._references().online
        d = self.direction()
        self.direction_ = d
        if self.method == "lira":
            if online:
                return calibration.lira_online(target, refs, trained)
            z = calibration.lira_offline(target, refs, ~trained, d or 1)
            return z if d else np.abs(z)  # two-sided where no direction is known
        if not d:
            raise LeakprobeError(
                f"{self.name}: the direction of {self.statistic} is unknown (no reference "
                "says which of its own samples it trained on); use lira-" + self.statistic)
        pop_target, pop_refs, pop_in = self.population_
        p_target = calibration.likelihood(target, pop_target, d)
        p_refs = calibration.likelihood(refs, pop_refs, d)
        pz_target = calibration.likelihood(pop_target, pop_target, d)
        pz_refs = calibration.likelihood(pop_refs, pop_refs, d)
        if online:
            return calibration.rmia_scores(p_target, p_refs, None, pz_target, pz_refs,
                                           gamma=self.gamma)
        a = self.rmia_a if self.rmia_a is not None else calibration.tune_rmia_a(
            pz_refs, pop_in, self.gamma)
        self.rmia_a_ = a
        return calibration.rmia_scores(p_target, p_refs, ~trained, pz_target, pz_refs,
                                       a=a, gamma=self.gamma)

    def report_notes(self, target) -> list[str]:
        refs = getattr(self, "references_", None)
        if refs is None:
            return []
        d = getattr(self, "direction_", None)
        notes = [f"calibrated against {len(refs.encoders)} {self.models_word} "
                 f"({'online: IN and OUT' if refs.online else 'offline: OUT only'}); "
                 f"{len(refs.population)} population samples"]
        if d is not None and not self.statistics[self.statistic].direction:
            notes.append("member direction of the statistic "
                         + ({1: "higher (from the references)", -1: "lower (from the "
                             "references)"}.get(d, "unknown: two-sided")))
        if self.method == "rmia":
            notes.append("RMIA on a per-sample statistic: Pr(x|model) = Phi(standardised "
                         "statistic over the population samples) (leakprobe's adaptation)"
                         + (f"; offline a = {self.rmia_a_}" if hasattr(self, "rmia_a_")
                            else ""))
        return notes


for _stat in STATISTICS.values():
    for _method in METHODS:
        _aliases = (_method, "calibrated") if _stat.in_aliases else ()
        register_attack(
            f"{_method}-{_stat.name}", family="encoder", aliases=_aliases,
            fixed={"method": _method, "statistic": _stat.name},
            summary=f"{'LiRA (Carlini et al., S&P 2022)' if _method == 'lira' else 'RMIA (Zarifzadeh et al., ICML 2024)'} "  # noqa: E501
                    f"on {_stat.name}'s per-sample statistic against reference encoders; "
                    "--knowledge reference")(CalibratedAttack)


#: The statistics ``lira-joint`` combines by default: every view statistic of the encoder
#: attacks that needs no tokens and costs at most 16 queries per image (PartCrop's 129 are
#: left out; ``statistics=`` adds them).
JOINT_STATISTICS = ("encodermi", "sslmem", "infonce", "baseline-consistency",
                    "baseline-norm", "lpla-p2")


@register_attack("lira-joint", family="encoder",
                 summary="leakprobe's multivariate LiRA: the encodermi, sslmem, infonce, "
                 "baseline and lpla-p2 statistics at once against reference encoders (Gaussian, "
                 "pooled correlation, weighted by the references' member shifts); --knowledge "
                 "reference")
class JointCalibratedAttack(MembershipAttack):
    """Offline (or online) LiRA on several per-sample statistics at once.

    Each statistic is standardised against the references exactly as ``lira-STAT`` does it;
    the standardised residuals share one pooled correlation matrix (shrunk toward the
    identity) and the score is the Fisher projection on the members' shift
    (:func:`~leakprobe.evaluation.calibration.lira_offline_multivariate`; online:
    :func:`~leakprobe.evaluation.calibration.lira_online_multivariate`). The shift of each
    statistic is estimated on the population samples from the references' own IN and OUT
    members (:func:`~leakprobe.evaluation.calibration.estimate_shift`; the paper's member
    direction keeps its sign), so a statistic that does not separate the references' members,
    or disagrees across references, gets little weight; with references of unknown training
    data (``--reference-model`` only) the paper directions weigh equally and statistics
    without one are left out. LiRA is Carlini et al. (S&P 2022); the multivariate Gaussian is
    leakprobe's extension (with one statistic it equals ``lira-STAT``).

    The statistics' answers are the ones ``lira-STAT`` and ``rmia-STAT`` read (one cache per
    audit): run beside them, it costs no query of its own.

    Args:
        statistics: keys of :data:`STATISTICS` (default :data:`JOINT_STATISTICS`).
        n_views, num_parts, views: options of the underlying attacks (None: their defaults).
        shrinkage: the correlation's shrinkage toward the identity (None: estimated).
        seed: seeds the underlying attacks' views and crops.
    """

    needs_fit = False
    needs_references = True
    cacheable: ClassVar[bool] = False  # as CalibratedAttack's

    def __init__(self, statistics: tuple[str, ...] | list[str] | str = JOINT_STATISTICS,
                 n_views: int | None = None, num_parts: int | None = None,
                 views: str | dict | None = None, shrinkage: float | None = None,
                 seed: int = 0) -> None:
        names = tuple(s.strip() for s in statistics.split(",")) if isinstance(statistics, str) \
            else tuple(statistics)
        unknown = [s for s in names if s not in STATISTICS]
        if unknown or not names:
            raise LeakprobeError(f"lira-joint: unknown statistics {unknown or names}; known: "
                                 f"{', '.join(STATISTICS)}")
        self.statistics = names
        self.n_views = n_views
        self.num_parts = num_parts
        self.views = views
        self.shrinkage = shrinkage
        self.seed = seed
        self.parts()  # a bad option fails here

    def parts(self) -> list[CalibratedAttack]:
        """One ``lira-STAT`` per statistic, with this attack's options and references."""
        out = [CalibratedAttack("lira", s, n_views=self.n_views, num_parts=self.num_parts,
                                views=self.views, seed=self.seed) for s in self.statistics]
        refs = getattr(self, "references_", None)
        if refs is not None:
            for part in out:
                part.prepare(refs)
        return out

    @property
    def prepared(self) -> bool:
        return getattr(self, "references_", None) is not None

    def prepare(self, public: Any) -> JointCalibratedAttack:
        if not hasattr(public, "statistic_of"):
            raise LeakprobeError("lira-joint needs reference encoders (--knowledge reference "
                                 "with --reference-data or --reference-model)")
        self.references_ = public
        return self

    def queries_per_image(self, target) -> int:
        return sum(p.queries_per_image(target) for p in self.parts())

    def extra_queries(self, target) -> int:
        return sum(p.extra_queries(target) for p in self.parts())

    def features(self, target, images: Images) -> np.ndarray:
        """Columns: the K statistics on the target, then each reference's K, then each
        reference's IN flag (references-major, statistics-minor)."""
        if not self.prepared:
            raise LeakprobeError("lira-joint needs --knowledge reference (reference encoders "
                                 "to calibrate against)")
        parts = self.parts()
        columns = [p.features(target, images) for p in parts]
        r = (columns[0].shape[1] - 1) // 2
        self.population_ = [p.population_ for p in parts]
        self.fixed_ = np.array([STATISTICS[s].direction or p.direction()
                                for s, p in zip(self.statistics, parts, strict=True)])
        target_stats = np.column_stack([c[:, 0] for c in columns])  # (N, K)
        refs = np.stack([c[:, 1:1 + r] for c in columns], axis=2)  # (N, R, K)
        trained = columns[0][:, 1 + r:]
        return np.column_stack([target_stats, refs.reshape(len(refs), -1), trained])

    def _unpack(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = len(self.statistics)
        r = (features.shape[1] - k) // (k + 1)
        target = features[:, :k]
        refs = features[:, k:k + r * k].reshape(len(features), r, k).transpose(1, 0, 2)
        trained = features[:, k + r * k:].T > 0.5
        return target, refs, trained

    def directions(self) -> np.ndarray:
        """(K,) the member shifts: the references' estimate (the paper's sign kept), else the
        fixed directions (0: unknown, left out)."""
        fixed = np.asarray(getattr(self, "fixed_", np.zeros(len(self.statistics))), dtype=float)
        pops = getattr(self, "population_", None)
        if pops:
            pop_in = pops[0][2]
            if pop_in.any() and not pop_in.all():
                pop_refs = np.stack([p[1] for p in pops], axis=2)  # (R, M, K)
                try:
                    shift = calibration.estimate_shift(pop_refs, pop_in)
                except ValueError:
                    return fixed
                return np.where(fixed != 0, fixed * np.abs(shift), shift)
        return fixed

    def score_features(self, features: np.ndarray) -> np.ndarray:
        target, refs, trained = self._unpack(np.asarray(features, dtype=np.float64))
        refs_obj = getattr(self, "references_", None)
        if refs_obj is not None and refs_obj.online:
            return calibration.lira_online_multivariate(target, refs, trained,
                                                        shrinkage=self.shrinkage)
        d = self.directions()
        self.directions_ = d
        if not np.any(d):
            raise LeakprobeError("lira-joint: no statistic has a known member direction")
        return calibration.lira_offline_multivariate(target, refs, ~trained, d,
                                                     shrinkage=self.shrinkage)

    def report_notes(self, target) -> list[str]:
        refs = getattr(self, "references_", None)
        if refs is None:
            return []
        d = getattr(self, "directions_", None)
        weights = "" if d is None else "; member shifts " + ", ".join(
            f"{s} {w:+.2f}" for s, w in zip(self.statistics, d, strict=True))
        return [f"multivariate LiRA (leakprobe's extension) over {', '.join(self.statistics)} "
                f"against {len(refs.encoders)} reference encoders "
                f"({'online' if refs.online else 'offline'}){weights}"]
