"""Membership inference on image-text (CLIP-style) dual encoders.

Threat model: black box. The attacker sends an image or a text and reads its L2-normalised
embedding (both towers embed into one space; each image and each text is one query). It holds
the images it tests with their reference captions (the pairs the model may have trained on)
and trains no model of its own; the fitted statistic is fitted on audited samples of known
membership (known-subset, cross-fitted).

- ``clip-cosine``: the cosine similarity attack (CSA) of Ko et al., "Practical Membership
  Inference Attacks Against Large-Scale Multi-Modal Models: A Pilot Study" (ICCV 2023,
  arXiv 2310.00108): contrastive training pulls the image and text embeddings of a training
  pair together, so a pair's cosine, thresholded, tells members. The score is the mean cosine
  of the image and each of its reference captions; nothing is fitted. Queries per image: the
  image and its C captions (1 + C; COCO has C = 5).
- ``clip-rank``: leakprobe's retrieval statistic (no paper): the rank of each true caption
  among the captions of the other audited images (and of the attacker's population
  captions, when given) by cosine to the image, normalised by the number of those captions;
  the score is minus the mean normalised rank over the image's captions, ties broken by the
  retrieval margin (the true caption's cosine minus the best other caption's). Nothing is
  fitted; the same answers as ``clip-cosine`` (shared: paid once), plus one query per
  population caption.
- ``clip-augment``: leakprobe's statistic in the spirit of Ko et al.'s augmentation-enhanced
  attack (which aggregates the cosine similarity over transformations of the target; this
  is not its exact aggregation): ``n_views`` seeded pairs of an augmented view of the image
  (random crop of 0.5-1 of its area + horizontal flip by default; ``views`` as for the
  encoder attacks, :mod:`leakprobe.views`) and a perturbed reference caption (the image's
  captions in turn, each word dropped with probability ``word_drop``, then two adjacent
  words swapped with probability ``swap``); their cosines, sorted, are the features, and
  a logistic regression on the standardised features is **fitted** on samples of known
  membership (cross-fitted, like EncoderMI). ``clip-augment-mean``: the mean of the same
  cosines, **nothing fitted**. Queries per image: ``2 * n_views`` (views and captions; both
  variants share them).
- ``blind``: the model-free floor of this family (Das et al., "Blind Baselines Beat
  Membership Inference Attacks for Foundation Models"): the image statistics of the encoder
  family's blind attack plus caption statistics (number of captions, their lengths in words
  and characters, the share of distinct words, the words' log document frequency over the
  audited set, the share of words no other audited image's captions use, and a 16-bucket
  hashed bag of words) -> logistic regression, cross-fitted. It never queries the model: it
  measures how the two sets differ, images and captions alike.

Each attack's score is per sample, higher = member. The answers several attacks read (the
clean image and caption embeddings of ``clip-cosine`` and ``clip-rank``; the views of the two
``clip-augment`` variants) are paid once per audit when the attacks share one
:class:`SharedAnswers` (:func:`share_answers`; the image-text audit does it).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from leakprobe.attacks.membership._common import MembershipAttack, check_features
from leakprobe.attacks.membership.blind import Blind
from leakprobe.attacks.membership.calibrated import CalibratedAttack, Statistic
from leakprobe.attacks.registry import AttackTable, register_attack
from leakprobe.data.images import ImageSet
from leakprobe.data.stream import image_batches
from leakprobe.data.text import words
from leakprobe.errors import LeakprobeError

FAMILY = "image-text"
#: Captions per image assumed by the query plan before the data is seen (COCO's five); the
#: image-text audit sets each attack's ``assumed_captions`` from the audited sets.
ASSUMED_CAPTIONS = 5
IMAGE_BATCH = 128  # images per embed_images call (the target batches further)
TEXT_BATCH = 512  # texts per embed_texts call
HASH_BUCKETS = 16  # the blind floor's hashed bag of words
DEFAULT_VIEWS = "mild,jitter-p=0"  # random crop of 0.5-1 of the area and a flip, no colour


def captions_of(samples: Any) -> list[list[str]]:
    """The samples' ``extras["captions"]``: one non-empty list of strings per image."""
    refs = samples.extras.get("captions") if isinstance(samples, ImageSet) else None
    if not isinstance(refs, list) or len(refs) != len(samples):
        raise LeakprobeError("image-text attacks need captioned images (extras['captions']: "
                             "one list of reference captions per image)")
    for i, r in enumerate(refs):
        if not isinstance(r, list) or not r or not all(isinstance(c, str) and c.strip()
                                                      for c in r):
            raise LeakprobeError(f"image {samples.ids[i]!r} has no reference caption")
    return refs


def caption_count(samples: ImageSet) -> int:
    """All reference captions of ``samples``."""
    return sum(len(r) for r in captions_of(samples))


class SharedAnswers:
    """Answers of one audit's target that several attacks read, computed once.

    Keys are what the answers depend on (the target, the samples' ids, the attack's
    settings); the values live as long as this object (one audit).
    """

    def __init__(self) -> None:
        self._store: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._store:
            self._store[key] = compute()
        return self._store[key]


def share_answers(attacks: Iterable[Any]) -> SharedAnswers:
    """Give the image-text attacks among ``attacks`` one :class:`SharedAnswers`."""
    shared = SharedAnswers()
    for a in attacks:
        if isinstance(a, (ImageTextAttack, CalibratedImageText)):
            a.answers = shared
    return shared


def _sample_key(target: Any, samples: ImageSet) -> tuple:
    return (id(target), len(samples), tuple(samples.ids))


def embed_image_batches(target: Any, images: Any) -> torch.Tensor:
    """(N, D) float64 L2-normalised image embeddings, :data:`IMAGE_BATCH` images a call."""
    parts = [target.embed_images(x) for x in image_batches(images, IMAGE_BATCH,
                                                            target.input_size)]
    if not parts:
        return torch.zeros(0, 0, dtype=torch.float64)
    return F.normalize(torch.cat([p.detach().cpu().double() for p in parts]), dim=-1)


def embed_text_batches(target: Any, texts: list[str]) -> torch.Tensor:
    """(T, D) float64 L2-normalised text embeddings, :data:`TEXT_BATCH` texts a call."""
    parts = [target.embed_texts(texts[i:i + TEXT_BATCH])
             for i in range(0, len(texts), TEXT_BATCH)]
    if not parts:
        return torch.zeros(0, 0, dtype=torch.float64)
    return F.normalize(torch.cat([p.detach().cpu().double() for p in parts]), dim=-1)


class ImageTextAttack(MembershipAttack):
    """Base of the image-text attacks: captioned samples in, the target's two towers queried.

    ``assumed_captions`` is the captions per image the query plan counts before the data is
    seen; :meth:`query_count` is the exact count for given samples (the audit checks the
    budget with it).
    """

    sample_kind = "pairs"
    target_kind = FAMILY
    answers: SharedAnswers | None = None
    assumed_captions: int = ASSUMED_CAPTIONS

    def query_count(self, samples: ImageSet) -> int:
        """Images and texts the attack sends the target for ``samples``."""
        raise NotImplementedError

    def share_key(self) -> tuple | None:
        """What the attack's answers depend on beyond the samples (None: not shared)."""
        return None

    def query_share_key(self, target: Any) -> Hashable | None:
        """The query plan counts attacks of one key once (their answers are shared)."""
        key = self.share_key()
        return None if key is None or self.answers is None else key

    def _answers(self, target: Any, samples: ImageSet, compute: Callable[[], Any]) -> Any:
        key = self.share_key()
        if self.answers is None or key is None:
            return compute()
        return self.answers.get((*key, *_sample_key(target, samples)), compute)

    def clean_answers(self, target: Any, samples: ImageSet
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image embeddings (N, D), every caption's (C, D) and each caption's image."""
        refs = captions_of(samples)

        def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            img = embed_image_batches(target, samples.pixels)
            txt = embed_text_batches(target, [c for r in refs for c in r])
            owner = np.repeat(np.arange(len(refs)), [len(r) for r in refs])
            return img.numpy(), txt.numpy(), owner

        if self.answers is None:
            return compute()
        return self.answers.get(("clean", *_sample_key(target, samples)), compute)


def mean_cosines(img: np.ndarray, txt: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """(N,) mean cosine of each image with its own captions (rows are L2-normalised)."""
    cos = np.einsum("cd,cd->c", img[owner], txt)
    sums = np.bincount(owner, weights=cos, minlength=img.shape[0])
    return sums / np.bincount(owner, minlength=img.shape[0])


@register_attack("clip-cosine", family=FAMILY,
                 summary="cosine similarity attack (Ko et al., ICCV 2023): mean cosine of the "
                 "image and its captions, nothing fitted; black box, 1 + C queries per image")
class ClipCosine(ImageTextAttack):
    """Ko et al.'s cosine similarity attack: the mean image-caption cosine, nothing fitted."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @property
    def needs_fit(self) -> bool:
        return False

    def queries_per_image(self, target: Any) -> int:
        return 1 + int(self.assumed_captions)

    def query_count(self, samples: ImageSet) -> int:
        return len(samples) + caption_count(samples)

    def share_key(self) -> tuple:
        return ("clean",)

    def features(self, target: Any, samples: ImageSet) -> np.ndarray:
        """(N, 1): the mean cosine of each image and its reference captions."""
        img, txt, owner = self.clean_answers(target, samples)
        return check_features(mean_cosines(img, txt, owner)[:, None], self.name)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64)[:, 0]


@register_attack("clip-rank", family=FAMILY,
                 summary="leakprobe's retrieval statistic: minus the normalised rank of the "
                 "true captions among the other audited (and population) captions, nothing "
                 "fitted; black box, 1 + C queries per image (shared with clip-cosine)")
class ClipRank(ImageTextAttack):
    """Minus the normalised retrieval rank of the true captions, ties broken by the margin.

    Call :meth:`prepare` with the attacker's own captioned data to add its captions to the
    pool of distractors (they must not be audited images' captions: the audit checks that the
    images are disjoint).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @property
    def needs_fit(self) -> bool:
        return False

    def prepare(self, public: Any) -> ClipRank:
        """Add the captions of ``public`` (captioned images) to the distractor pool."""
        refs = captions_of(public)
        self.distractors_ = [c for r in refs for c in r]
        return self

    @property
    def distractors(self) -> list[str]:
        return list(getattr(self, "distractors_", []))

    def clone(self) -> ClipRank:
        fresh = ClipRank(**self.get_params())
        if hasattr(self, "distractors_"):
            fresh.distractors_ = self.distractors_
        return fresh

    def queries_per_image(self, target: Any) -> int:
        return 1 + int(self.assumed_captions)

    def extra_queries(self, target: Any) -> int:
        return len(self.distractors)

    def query_count(self, samples: ImageSet) -> int:
        return len(samples) + caption_count(samples)

    def share_key(self) -> tuple:
        return ("clean",)

    def query_share_key(self, target: Any) -> Hashable | None:
        # the plan drops the extra queries of an attack it counts as shared: with
        # distractors, clip-rank is counted on its own (the plan then overcounts)
        return None if self.distractors else super().query_share_key(target)

    def features(self, target: Any, samples: ImageSet) -> np.ndarray:
        """(N, 2): minus the mean normalised rank of the true captions, and their mean
        retrieval margin (the true caption's cosine minus the best other caption's)."""
        img, txt, owner = self.clean_answers(target, samples)
        pool = txt
        pool_owner = owner
        if self.distractors:
            extra = embed_text_batches(target, self.distractors).numpy()
            pool = np.concatenate([txt, extra])
            pool_owner = np.concatenate([owner, np.full(len(extra), -1)])
        sims = img @ pool.T  # (N, P)
        out = np.zeros((img.shape[0], 2))
        for i in range(img.shape[0]):
            own = pool_owner == i
            others = sims[i, ~own]
            true = sims[i, own]
            if others.size == 0:
                raise LeakprobeError("clip-rank needs captions of more than one image")
            rank = (others[None, :] > true[:, None]).sum(1) / others.size
            out[i] = (-rank.mean(), (true - others.max()).mean())
        return check_features(out, self.name)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """The rank (then the margin) as a score: the samples' lexicographic order."""
        x = np.asarray(features, dtype=np.float64)
        order = np.lexsort((x[:, 1], x[:, 0]))
        score = np.empty(len(x))
        score[order] = np.arange(len(x), dtype=np.float64)
        return score


def perturb_caption(text: str, generator: torch.Generator, word_drop: float,
                    swap: float) -> str:
    """``text`` with each word dropped with probability ``word_drop`` (one word is always
    kept), then two adjacent words swapped with probability ``swap``; seeded by
    ``generator``."""
    tokens = text.split()
    if not tokens:
        return text
    keep = (torch.rand(len(tokens), generator=generator) >= word_drop).tolist()
    kept = [w for w, k in zip(tokens, keep, strict=True) if k]
    if not kept:
        pick = int(torch.randint(len(tokens), (1,), generator=generator))
        kept = [tokens[pick]]
    if len(kept) >= 2 and float(torch.rand(1, generator=generator)) < swap:
        j = int(torch.randint(len(kept) - 1, (1,), generator=generator))
        kept[j], kept[j + 1] = kept[j + 1], kept[j]
    return " ".join(kept)


@register_attack("clip-augment", family=FAMILY, fixed={"statistic": "fitted"},
                 summary="leakprobe's statistic after Ko et al.'s augmentation attack: sorted "
                 "cosines of augmented views and perturbed captions -> logistic regression; "
                 "black box, fitted on known samples; 2 x n_views (16) queries per image")
@register_attack("clip-augment-mean", family=FAMILY, fixed={"statistic": "mean"},
                 summary="clip-augment's mean cosine of augmented views and perturbed "
                 "captions, nothing fitted; black box; the same 16 queries per image")
class ClipAugment(ImageTextAttack):
    """Cosines of ``n_views`` (augmented view, perturbed caption) pairs per image.

    Args:
        statistic: ``fitted`` (the sorted cosines -> logistic regression, cross-fitted on
            known samples) or ``mean`` (their mean, nothing fitted).
        n_views: pairs per image (each one image and one text query).
        views: the image views (:func:`leakprobe.views.parse_views`; default: crops of
            0.5-1 of the area and a horizontal flip, no colour change).
        word_drop: probability of dropping each word of the caption.
        swap: probability of swapping two adjacent words after the drop.
        regularization: inverse L2 strength of the logistic regression.
        seed: fixes the views and the caption perturbations.
    """

    query_options: ClassVar[tuple[str, ...]] = ("n_views",)

    def __init__(self, statistic: str = "fitted", n_views: int = 8,
                 views: str | dict | None = DEFAULT_VIEWS, word_drop: float = 0.15,
                 swap: float = 0.5, regularization: float = 1.0, seed: int = 0) -> None:
        from leakprobe.views import parse_views

        if statistic not in ("fitted", "mean"):
            raise LeakprobeError(f"clip-augment statistic must be fitted or mean, got "
                                 f"{statistic!r}")
        if n_views < 1:
            raise LeakprobeError(f"clip-augment needs at least 1 view, got {n_views}")
        if not 0 <= word_drop < 1 or not 0 <= swap <= 1:
            raise LeakprobeError("clip-augment: word_drop must lie in [0, 1) and swap in "
                                 "[0, 1]")
        self.statistic = statistic
        self.n_views = n_views
        self.views = views
        self.word_drop = word_drop
        self.swap = swap
        self.regularization = regularization
        self.seed = seed
        parse_views(views)  # a bad recipe fails here

    @property
    def name(self) -> str:
        return "clip-augment" if self.statistic == "fitted" else "clip-augment-mean"

    @property
    def needs_fit(self) -> bool:
        return self.statistic == "fitted"

    def queries_per_image(self, target: Any) -> int:
        return 2 * self.n_views

    def query_count(self, samples: ImageSet) -> int:
        return 2 * self.n_views * len(samples)

    def share_key(self) -> tuple:
        views = self.views if not isinstance(self.views, dict) else repr(sorted(
            self.views.items()))
        return ("augment", self.n_views, views, self.word_drop, self.swap, self.seed)

    def features(self, target: Any, samples: ImageSet) -> np.ndarray:
        """(N, n_views): the cosines of the image's (view, perturbed caption) pairs, sorted.

        Views and captions are drawn from one generator seeded ``seed``, in the order of
        ``samples`` (the audit's seeded query order)."""
        return self._answers(target, samples, lambda: self._features(target, samples))

    def _features(self, target: Any, samples: ImageSet) -> np.ndarray:
        from leakprobe.views import parse_views

        refs = captions_of(samples)
        g = torch.Generator().manual_seed(self.seed)
        aug = parse_views(self.views).augmentation(target.input_size)
        n = self.n_views
        per_call = max(1, IMAGE_BATCH // n)
        rows = []
        start = 0
        for chunk in image_batches(samples.pixels, per_call, target.input_size):
            b = chunk.shape[0]
            views = aug(chunk, g, n).reshape(b * n, *chunk.shape[1:])
            texts = [perturb_caption(refs[start + i][v % len(refs[start + i])], g,
                                     self.word_drop, self.swap)
                     for i in range(b) for v in range(n)]
            img = embed_image_batches(target, views)
            txt = embed_text_batches(target, texts)
            rows.append((img * txt).sum(1).reshape(b, n).numpy())
            start += b
        cos = np.concatenate(rows) if rows else np.zeros((0, n))
        return check_features(np.sort(cos, axis=1), self.name)

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> ClipAugment:
        if self.statistic == "fitted":
            self.model_ = make_pipeline(
                StandardScaler(), LogisticRegression(C=self.regularization, max_iter=2000,
                                                     random_state=self.seed),
            ).fit(features, np.asarray(is_member, dtype=int))
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if self.statistic == "mean":
            return x.mean(1)
        return self.model_.decision_function(x)


def caption_statistics(refs: list[list[str]]) -> np.ndarray:
    """(N, 10 + :data:`HASH_BUCKETS`) model-free statistics of each image's captions.

    Per image: the number of captions; their lengths in words (mean, std, min, max) and
    characters (mean); distinct words over words; the mean and minimum log document
    frequency of its words (the share of the given images whose captions use the word); the
    share of its distinct words no other image's captions use; a hashed bag of words (CRC-32
    of the word modulo :data:`HASH_BUCKETS`, counts over the image's words). Frequencies are
    counted over ``refs`` only: the set scored, never its labels.
    """
    tokens = [[words(c) for c in cs] for cs in refs]
    n = max(len(refs), 1)
    doc_freq = Counter(w for cs in tokens for w in {w for c in cs for w in c})
    rows = []
    for raw, cs in zip(refs, tokens, strict=True):
        lengths = np.array([len(c) for c in cs], dtype=np.float64)
        every = [w for c in cs for w in c]
        distinct = set(every)
        logf = np.log([doc_freq[w] / n for w in every]) if every else np.zeros(1)
        buckets = np.zeros(HASH_BUCKETS)
        for w in every:
            buckets[zlib.crc32(w.encode()) % HASH_BUCKETS] += 1
        buckets /= max(len(every), 1)
        rows.append([
            len(cs), lengths.mean(), lengths.std(), lengths.min(), lengths.max(),
            float(np.mean([len(c) for c in raw])), len(distinct) / max(len(every), 1),
            float(logf.mean()), float(logf.min()),
            sum(doc_freq[w] == 1 for w in distinct) / max(len(distinct), 1), *buckets])
    return np.asarray(rows, dtype=np.float64).reshape(len(refs), 10 + HASH_BUCKETS)


@register_attack("blind", family=FAMILY,
                 summary="blind floor (Das et al.), always run: image and caption statistics "
                 "only, no query; measures how the member and non-member sets differ, not the "
                 "model")
class ImageTextBlind(Blind):
    """The encoder family's blind floor with caption statistics added; makes no query."""

    sample_kind = "pairs"

    def features(self, target: Any, samples: Any) -> np.ndarray:
        """(N, F): :func:`~leakprobe.attacks.membership.blind.image_statistics` and
        :func:`caption_statistics` side by side."""
        images = super().features(target, samples.pixels)
        return np.concatenate([images, caption_statistics(captions_of(samples))], axis=1)

    def query_count(self, samples: ImageSet) -> int:
        return 0


#: The image-text statistics the calibrated attacks calibrate (each nothing-fitted attack's
#: per-sample score; members score higher on both).
CALIBRATED_STATISTICS: dict[str, Statistic] = {s.name: s for s in (
    Statistic("clip-cosine", "clip-cosine", direction=1),
    Statistic("clip-augment-mean", "clip-augment-mean", reduce="mean", direction=1),
)}


class CalibratedImageText(CalibratedAttack):
    """LiRA or RMIA on an image-text statistic, against reference image-text models.

    ``lira-clip-cosine`` is the offline LiRA of Carlini et al. on Ko et al.'s cosine: the
    target's image-caption cosine of a pair is compared with the same pair's cosine on
    reference models that did not train on it (per-pair Gaussian, pooled variance with few
    references), which separates "the model trained on this pair" from "this pair is easy to
    align for any model" (a short, literal caption). Ko et al.'s own shadow variants
    threshold the cosine with a shadow model's distribution, not per pair; the per-pair
    calibration is LiRA's. ``rmia-clip-cosine``: RMIA with the same adaptation as the encoder
    statistics (:mod:`leakprobe.attacks.membership.calibrated`). ``clip-augment-mean``: the
    same for the mean cosine of augmented views and perturbed captions.

    The references come from :func:`leakprobe.workflows.image_text_audit.image_text_references`
    (trained by leakprobe on the attacker's captioned population with the CLIP recipe of
    :mod:`leakprobe.training.image_text`, or given). The target pays the audited pairs'
    queries (shared with the uncalibrated attack of the statistic when both run) and, once
    per statistic, the population pairs'.
    """

    statistics: ClassVar[dict[str, Statistic]] = CALIBRATED_STATISTICS
    base_family: ClassVar[str] = FAMILY
    models_word: ClassVar[str] = "reference image-text models"
    sample_kind = "pairs"
    target_kind = FAMILY
    answers: SharedAnswers | None = None
    assumed_captions: int = ASSUMED_CAPTIONS

    def __init__(self, method: str = "lira", statistic: str = "clip-cosine",
                 n_views: int | None = None, views: str | dict | None = None,
                 gamma: float = 1.0, rmia_a: float | None = None, seed: int = 0) -> None:
        super().__init__(method=method, statistic=statistic, n_views=n_views, views=views,
                         gamma=gamma, rmia_a=rmia_a, seed=seed)

    def base(self) -> Any:
        """The uncalibrated image-text attack of the statistic, sharing this audit's
        answers (its target queries are paid once with the uncalibrated attack's)."""
        attack: Any = super().base()
        attack.answers = self.answers
        attack.assumed_captions = self.assumed_captions
        return attack

    def population_samples(self, references: Any) -> ImageSet:
        """The population pairs (images and captions)."""
        return references.population

    def queries_per_image(self, target: Any) -> int:
        return int(self.base().queries_per_image(target))

    def query_count(self, samples: ImageSet) -> int:
        """The audited pairs' images and texts (shared with the base attack's)."""
        return int(self.base().query_count(samples))

    def share_key(self) -> tuple | None:
        return self.base().share_key()

    def query_share_key(self, target: Any) -> tuple:
        """The audited pairs' answers are the uncalibrated attack's (shared when the audit
        shares answers); the population's are counted by :meth:`extra_share_key`."""
        key = self.share_key()
        if key is not None and self.answers is not None:
            return key
        return super().query_share_key(target)

    def extra_share_key(self, target: Any) -> Hashable | None:
        """lira-X and rmia-X pay the population pairs of statistic X once."""
        return ("population", self.statistic, self.share_key())

    def population_query_count(self) -> int:
        """The population pairs' images and texts, paid once per statistic and target."""
        refs = getattr(self, "references_", None)
        return 0 if refs is None else int(self.base().query_count(refs.population))

    def extra_queries(self, target: Any) -> int:
        return self.population_query_count()


for _stat in CALIBRATED_STATISTICS.values():
    for _method, _title in (("lira", "LiRA (Carlini et al., S&P 2022)"),
                            ("rmia", "RMIA (Zarifzadeh et al., ICML 2024)")):
        register_attack(
            f"{_method}-{_stat.name}", family=FAMILY, aliases=(_method, "calibrated"),
            fixed={"method": _method, "statistic": _stat.name},
            summary=f"{_title} on {_stat.name}'s per-pair statistic against reference "
                    "image-text models; --knowledge reference")(CalibratedImageText)


# name -> class, a view of the registry (leakprobe.attacks.registry)
IMAGE_TEXT_ATTACKS = AttackTable(FAMILY)


def audit_query_count(attacks: Iterable[Any], samples: ImageSet) -> int:
    """Images and texts ``attacks`` send the target for ``samples``: shared answers once,
    population captions (``extra_queries``) and the calibrated attacks' population pairs
    (once per statistic) on top."""
    attacks = list(attacks)
    total = 0
    seen: set[Hashable] = set()
    for a in attacks:
        count = getattr(a, "query_count", None)
        if count is None:
            continue
        shares = isinstance(a, (ImageTextAttack, CalibratedImageText)) and a.answers is not None
        key = a.share_key() if shares else None
        if isinstance(a, CalibratedImageText):
            population_key = ("population", a.statistic, a.share_key())
            if population_key not in seen:
                seen.add(population_key)
                total += a.population_query_count()
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        total += int(count(samples))
    return total + sum(int(a.extra_queries(None)) for a in attacks
                       if isinstance(a, ImageTextAttack))
