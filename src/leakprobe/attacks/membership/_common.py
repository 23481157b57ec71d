"""Pieces shared by the membership attacks: the attack base classes and the learned scorers.

An attack queries a target for per-image *features* (the expensive, query-paying part) and
maps features to a membership score with a small learned *scorer* (the cheap part). Keeping
the two apart lets the audit protocol query each image once and cross-fit only the scorer.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.data.stream import Images, image_batches
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.plan import Answer, Request, ViewQuery, planned_features
from leakprobe.threads import single_threaded
from leakprobe.views import ViewSpec, attack_views


@dataclass
class LabeledImages:
    """Images the attacker knows the membership of: (N,3,H,W) in [0,1] (a tensor or a
    :class:`~leakprobe.data.stream.LazyImages`) and (N,) bools."""

    images: Images
    is_member: np.ndarray

    def __post_init__(self) -> None:
        self.is_member = np.asarray(self.is_member, dtype=bool)
        if len(self.is_member) != self.images.shape[0]:
            raise LeakprobeError("one membership label per image is required")
        if self.is_member.all() or not self.is_member.any():
            raise LeakprobeError("known samples must contain both members and non-members")


class MembershipAttack:
    """Base class of every membership attack (scikit-learn estimator conventions).

    Hyper-parameters are set in ``__init__`` and stored unchanged; learned state is set in
    ``fit`` and named with a trailing underscore. Subclasses implement :meth:`features`
    (queries the target) and, when they learn anything, :meth:`fit_features`.

    What an attack is and needs is declared here, and overridden by a subclass with a class
    attribute, or with a property where it follows the attack's settings (EncoderMI's name
    is ``encodermi-{variant}``): the audits read these, never probe for them.
    """

    # The name of a class registered as itself (set by leakprobe.attacks.registry).
    registered_name: ClassVar[str] = ""
    # What ``features`` takes: "images" (an (N,3,H,W) tensor) or "pairs" (an ImageSet with
    # the ground truth the attack compares answers with: outputs, captions).
    sample_kind: ClassVar[str] = "images"
    # The model it queries: a family of leakprobe.attacks.registry ("encoder",
    # "image2image", "captioner"), or None for an attack that queries none (blind).
    target_kind: ClassVar[str | None] = "encoder"
    # Compares part embeddings with the whole image's tokens (PartCrop): refused on a target
    # without tokens in its embedding space.
    needs_tokens: ClassVar[bool] = False
    # Constructor arguments that set the queries per image (named by the budget error).
    query_options: ClassVar[tuple[str, ...]] = ()
    # Scores against reference models handed over by ``prepare`` (--knowledge reference).
    needs_references: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """The name results are reported under: the registry name by default."""
        return self.registered_name or type(self).__name__

    @property
    def needs_fit(self) -> bool:
        """Whether the attack learns a scorer from known samples (False: a fixed score)."""
        return True

    @property
    def model_free(self) -> bool:
        """Whether it judges the given sets alone, never the model (always cross-fitted)."""
        return False

    @property
    def prepared(self) -> bool:
        """Whether :meth:`prepare` has given the attack what it needs (or needs nothing)."""
        return True

    def prepare(self, public: Any) -> MembershipAttack:
        """Learn what the attack needs from the attacker's own data; a no-op by default.

        m4i-feature trains its multimodal extractor here. Returns self.
        """
        return self

    def report_notes(self, target) -> list[str]:
        """Lines the report adds to this attack's result (partcrop-pooled's caveat)."""
        return []

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` arguments as stored on the object."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def features_key(self) -> list[Any]:
        """What decides the attack's features, for the feature cache's key: its name and
        parameters. An attack that refits another's features (partcrop-v2: partcrop's)
        returns that attack's, so both read one cache entry."""
        return [self.name, self.get_params()]

    def clone(self) -> MembershipAttack:
        """A fresh, unfitted copy with the same hyper-parameters."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def queries_per_image(self, target) -> int:
        """Images sent to the target for each audited image."""
        raise NotImplementedError

    def extra_queries(self, target) -> int:
        """Queries beyond the audited images' (calibrated attacks' population samples)."""
        return 0

    def features(self, target, samples: Any) -> np.ndarray:
        """Query ``target`` about ``samples``; (N, F) float features.

        ``samples`` is (N, 3, H, W) images, a tensor or a
        :class:`~leakprobe.data.stream.LazyImages` read batch by batch with
        :func:`~leakprobe.data.stream.image_batches`; an ImageSet when ``sample_kind`` is
        ``"pairs"``.
        """
        raise NotImplementedError

    def query_requests(self, target) -> tuple[Request, ...] | None:
        """What the attack asks of the target for every image, as shareable requests
        (:mod:`leakprobe.evaluation.plan`); None: it queries on its own in :meth:`features`.

        An attack that declares requests implements :meth:`chunk_features` (and may override
        :meth:`finish_features`); its :meth:`features` is then the one-attack plan. Raising
        here refuses the target before any query.
        """
        return None

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        """(b, F) features of one chunk of the shared answers to :meth:`query_requests`."""
        raise NotImplementedError

    def finish_features(self, features: np.ndarray) -> np.ndarray:
        """The joined (N, F) chunk features, finished (checked; sorted or pooled)."""
        return check_features(features, self.name)

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> MembershipAttack:
        return self

    def neural_scorer(self) -> NeuralScorer | None:
        """The attack's learned network, when it has one (then fits can be batched)."""
        return None

    def fit_score_tasks(self, features: np.ndarray, tasks: list) -> list[np.ndarray]:
        """Fit a fresh copy on each task's fit part and score its test part.

        Attacks whose scorer is a :class:`NeuralScorer` train all copies at once; the others
        fit one clone per task (closed-form and scikit-learn scorers are cheap).
        """
        scorer = self.neural_scorer()
        if scorer is not None:
            return scorer.fit_score_many(features, tasks)
        out = []
        with single_threaded():
            for t in tasks:
                fitted = self.clone().fit_features(features[t.train], t.labels)
                out.append(np.asarray(fitted.score_features(features[t.test]),
                                      dtype=np.float64))
        return out

    def score_features(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, target, known: LabeledImages | None = None) -> MembershipAttack:
        """Learn the scorer from images of known membership (no-op for untrained attacks)."""
        if not self.needs_fit:
            return self
        if known is None:
            raise LeakprobeError(f"{self.name} needs known members and non-members to fit")
        return self.fit_features(self.features(target, known.images), known.is_member)

    def score(self, target, images: Images) -> np.ndarray:
        """Membership scores of ``images`` (higher = more likely a member)."""
        return self.score_features(self.features(target, images))


class ViewAttack(MembershipAttack):
    """An attack that embeds augmented views of each image (EncoderMI, LpLA, a baseline).

    Subclasses store ``n_views``, ``crop_scale`` and ``views`` (see
    :func:`leakprobe.views.parse_views`): None draws SimCLR's views with ``crop_scale``;
    given views replace ``crop_scale``.
    """

    n_views: int
    crop_scale: tuple[float, float]
    views: str | dict | ViewSpec | None
    seed: int
    query_options = ("n_views",)

    def _set_views(self, n_views: int, crop_scale: tuple[float, float], seed: int,
                   views: str | dict | ViewSpec | None, minimum: int = 1) -> None:
        """Store and check the view options (a bad recipe or too few views fails here)."""
        if n_views < minimum:
            raise ValueError(f"{self.name} needs at least {minimum} views, got {n_views}")
        self.n_views = n_views
        self.crop_scale = crop_scale
        self.seed = seed
        self.views = views
        self.view_spec()

    def view_spec(self) -> ViewSpec:
        """The resolved view recipe the attack draws from."""
        return attack_views(self.views, self.crop_scale)

    def view_request(self, n_views: int | None = None) -> ViewQuery:
        """The request for ``n_views`` (default: ``self.n_views``) of the attack's views,
        drawn ``images_per_batch`` images at a time from one generator seeded ``seed``."""
        return ViewQuery.of(self.view_spec(), self.n_views if n_views is None else n_views,
                            self.seed, int(getattr(self, "images_per_batch", 128)))

    def features(self, target, images: Images) -> np.ndarray:
        """The one-attack plan of :meth:`query_requests` (the shared path of an audit)."""
        if self.query_requests(target) is None:
            raise NotImplementedError
        return planned_features(self, target, images)

    def embedded_views(self, target, images: Images, batch: int) -> Iterator[torch.Tensor]:
        """(b, n_views, D) embeddings of ``n_views`` augmented views per image, ``batch``
        images at a time, the views drawn from one generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(self.seed)
        aug = self.view_spec().augmentation(target.input_size)
        for chunk in image_batches(images, batch, target.input_size):
            views = aug(chunk, g, self.n_views)
            b = views.shape[0]
            emb = target.embed(views.reshape(b * self.n_views, *views.shape[2:]))
            yield emb.view(b, self.n_views, -1)


def check_features(x: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise LeakprobeError(f"{name}: the target's answers gave NaN/inf attack features")
    return x


@dataclass
class NeuralScorer:
    """Trains a network with BCE (Adam) on standardised features; keeps the best epoch.

    The best epoch is chosen on a seeded validation part of the *fit* data (never the
    evaluation data), by validation loss; training stops ``patience`` epochs after the last
    improvement (at most ``epochs``). Training runs in
    :mod:`leakprobe.attacks.membership._batched`, which also fits many copies at once
    (:meth:`fit_score_many`, used by cross-fitting and the permutation test).
    """

    network: str = "mlp"  # "mlp", "mlp-rmsnorm" (PartCrop-v2's) or "deepset"
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 64
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 10  # _batched.PATIENCE

    def _recipe(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "val_fraction": self.val_fraction,
                "seed": self.seed, "patience": self.patience}

    def fit(self, x: np.ndarray, y: np.ndarray) -> NeuralScorer:
        """Train on (N, F) features and 0/1 labels, on one thread (see leakprobe.threads)."""
        from leakprobe.attacks.membership._batched import train_network

        self.net_ = train_network(self.network, x, y, **self._recipe())
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.net_.score(x)

    def fit_score_many(self, x: np.ndarray, tasks: list) -> list[np.ndarray]:
        """One fresh scorer per :class:`FitTask`, trained together; each task's test scores."""
        from leakprobe.attacks.membership._batched import fit_score_networks

        return fit_score_networks(self.network, x, tasks, **self._recipe())


@dataclass
class ThresholdScorer:
    """One statistic, one threshold: direction and cut chosen by balanced accuracy on fit data.

    ``score`` returns the signed statistic (so ROC metrics use every threshold);
    ``threshold_`` is the cut the attacker would use for hard decisions.
    """

    def fit(self, x: np.ndarray, y: np.ndarray) -> ThresholdScorer:
        s = x[:, 0] if x.ndim == 2 else x
        y = np.asarray(y, dtype=bool)
        self.sign_ = 1.0 if s[y].mean() >= s[~y].mean() else -1.0
        v = self.sign_ * s
        cuts = np.unique(v)
        tpr = (v[y][None, :] >= cuts[:, None]).mean(1)
        tnr = (v[~y][None, :] < cuts[:, None]).mean(1)
        self.threshold_ = float(cuts[np.argmax(tpr + tnr)])
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        s = x[:, 0] if x.ndim == 2 else x
        return self.sign_ * s


def pairwise_cosines(views: torch.Tensor) -> torch.Tensor:
    """(B, n, D) embeddings -> (B, n(n-1)/2) cosine similarities of all view pairs."""
    z = F.normalize(views, dim=-1)
    gram = z @ z.transpose(1, 2)
    i, j = torch.triu_indices(views.shape[1], views.shape[1], offset=1)
    return gram[:, i, j]
