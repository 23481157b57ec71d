"""PartCrop (Zhu et al., ACM CCS 2024): membership from how parts answer to the whole.

Threat model: black box, training recipe unknown. The attacker can embed any image and read
the whole image's patch / feature-map tokens. It knows some members and non-members
(``known-subset``) or owns a shadow encoder (``shadow``).

Method (paper and reference code ``mia_lib/mia_util.py``), attack ``partcrop``:
1. The whole image gives tokens T (B, L, D). K part crops (default 128) are cut from it with
   random-resized-crop at scale (0.08, 0.2) and horizontal flips, resized to half the input
   side, and embedded: P (B, K, D).
2. Response of part k: ``log_softmax_l(P_k . T_l / temperature)`` over the L tokens, with the
   raw dot product and temperature 1.
3. Two KL scores per part, ``KL(q || response)``: q uniform over L, and q a "sorted Gaussian"
   (sorted standard-normal draws mapped through their Gaussian density and normalised: a
   bell over token positions), drawn per part from a seeded generator.
4. Each score is sorted over the K parts (descending); the two are concatenated into 2K
   features, and an MLP 2K-512-256-128-1 (BCE, Adam 1e-3, weight decay 5e-4, 100 epochs)
   maps them to a membership probability; the epoch is picked on a validation part of the
   fit data (leakprobe also stops 20 epochs after the last real improvement of that loss,
   see :mod:`leakprobe.attacks.membership._batched`: it keeps the permutation test cheap).

Departures from the reference code:
- members and non-members get identical preprocessing (the reference code feeds members a
  random training crop and non-members a plain resize, which inflates its numbers);
- the Gaussian reference is seeded and drawn once per feature extraction, so every image is
  compared with the same references.

Variants (leakprobe's, not the paper's; each reports under its own name):
- ``partcrop-cosine``: cosine similarity with temperature 0.1 instead of the raw dot product.
  Raw dot products make the softmax's sharpness depend on each encoder's arbitrary embedding
  scale (an encoder with norm-100 embeddings gives one-hot responses and saturated KL
  scores); cosines do not. On a memorising SimCLR resnet-tiny (64 + 64 images, 3 cross-fit
  repeats, the test suite's fixture) cosine/0.1 gave AUC 0.85 where the paper's raw dot
  product gave 0.78 (and ``partcrop-pooled`` 0.90).
- ``partcrop-pooled`` (:class:`PartCropPooled`): for targets without usable tokens. The
  response of a part is the cosine of its embedding with the whole image's embedding, and the
  K sorted cosines are the features: part-vs-whole cosines, not the paper's token KL.

The authors' extension, ``partcrop-v2`` (:class:`PartCropV2`, arXiv 2505.10351), keeps these
features and changes the attacker network (see its docstring).

Tokens must live in the embedding space (the parts are embeddings, the whole is tokens): the
token attacks refuse a target that exposes no tokens, one that declares
``tokens_in_embedding_space = False`` (e.g. tokens taken before a projection head), and one
whose token width differs from its embedding width; undeclared tokens of the embedding width
are trusted (see :func:`token_problem`). Expanding an alias such as ``all`` for such a target
runs ``partcrop-pooled`` in place of ``partcrop``; a token attack named explicitly is refused.

The part crops are the method's own probe (``num_parts``, ``crop_scale``, ``part_size``), not
a guess of the training augmentation, so ``--views`` does not change them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.attacks.membership._batched import RMS_MLP
from leakprobe.attacks.membership._common import MembershipAttack, NeuralScorer
from leakprobe.attacks.registry import register_attack
from leakprobe.data.stream import Images
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.plan import (
    Answer,
    CleanQuery,
    PartQuery,
    Request,
    planned_features,
)
from leakprobe.evaluation.plan import (
    sorted_gaussian_reference as sorted_gaussian_reference,  # re-exported (tests, docs)
)

# The paper's settings (reference code) and those of the ``partcrop-cosine`` variant.
PAPER_SIMILARITY, PAPER_TEMPERATURE = "dot", 1.0
COSINE_SIMILARITY, COSINE_TEMPERATURE = "cosine", 0.1
POOLED = "partcrop-pooled"


def _scale(crop_scale) -> tuple[float, float]:
    low, high = crop_scale
    return float(low), float(high)


def token_problem(target) -> str | None:
    """Why PartCrop's token path cannot use ``target``, known before any query (None: it can).

    A target says so through ``has_tokens`` (False: no tokens exposed) and
    ``tokens_in_embedding_space`` (False: its tokens live in another space than its
    embeddings, e.g. before a projection head). Undeclared means usable; the token width is
    still checked against the embedding width on the first answer.
    """
    if getattr(target, "has_tokens", None) is False:
        return "the target exposes no tokens"
    if getattr(target, "tokens_in_embedding_space", None) is False:
        return "the target declares its tokens are not in its embedding space"
    return None


def needs_tokens_error(name: str, why: str) -> LeakprobeError:
    """The one-line refusal of token attack ``name`` on a target without usable tokens."""
    return LeakprobeError(f"attack '{name}' compares part embeddings with the whole image's "
                          f"tokens, but {why}; use {POOLED} (part-vs-whole embedding cosines) "
                          "instead")


def check_token_attacks(attacks: list, target) -> None:
    """Refuse, before any query, a token attack among ``attacks`` that ``target`` cannot serve."""
    problem = token_problem(target)
    for attack in attacks:
        if problem and attack.needs_tokens:
            raise needs_tokens_error(attack.name, problem)


@register_attack("partcrop", family="encoder", aliases=("partcrop-variants",),
                 summary="PartCrop (Zhu et al., CCS 2024), the paper's: part crops against the "
                 "whole image's tokens; black box, needs tokens, fitted")
@register_attack("partcrop-cosine", family="encoder", aliases=("partcrop-variants",),
                 fixed={"similarity": COSINE_SIMILARITY, "temperature": COSINE_TEMPERATURE},
                 summary="PartCrop with cosine similarity, temperature 0.1 (leakprobe variant); "
                 "black box, needs tokens")
class PartCrop(MembershipAttack):
    """PartCrop membership attack (the paper's method with its defaults).

    Args:
        num_parts: part crops per image (K).
        crop_scale: area range of a part relative to the whole image.
        part_size: side the parts are resized to (default: half the target's input side).
        similarity: ``dot`` (the paper's raw dot product, default) or ``cosine``.
        temperature: divides the similarities before the softmax (paper: 1).
        images_per_batch: whole images processed together (parts = this x K queries).
        epochs: attacker MLP epochs.
        seed: seeds the crops, the Gaussian references and the attacker.

    The name follows the settings: ``partcrop`` for the paper's (dot, 1), ``partcrop-cosine``
    for (cosine, 0.1), ``partcrop-{similarity}-t{temperature}`` otherwise.
    """

    needs_tokens = True  # compares parts with the whole image's tokens
    query_options = ("num_parts",)

    def __init__(
        self,
        num_parts: int = 128,
        crop_scale: tuple[float, float] = (0.08, 0.2),
        part_size: int | None = None,
        similarity: str = PAPER_SIMILARITY,
        temperature: float = PAPER_TEMPERATURE,
        images_per_batch: int = 64,
        epochs: int = 100,
        seed: int = 0,
    ) -> None:
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.num_parts = num_parts
        self.crop_scale = crop_scale
        self.part_size = part_size
        self.similarity = similarity
        self.temperature = temperature
        self.images_per_batch = images_per_batch
        self.epochs = epochs
        self.seed = seed

    @property
    def name(self) -> str:
        return self._named("partcrop")

    def _named(self, base: str) -> str:
        """``base`` for the paper's settings, ``base-cosine``, or ``base-{sim}-t{temp}``."""
        setting = (self.similarity, float(self.temperature))
        if setting == (PAPER_SIMILARITY, PAPER_TEMPERATURE):
            return base
        if setting == (COSINE_SIMILARITY, COSINE_TEMPERATURE):
            return f"{base}-cosine"
        return f"{base}-{self.similarity}-t{self.temperature:g}"

    def queries_per_image(self, target) -> int:
        return self.num_parts + 1

    def query_requests(self, target) -> tuple[Request, ...]:
        """The part crops and the whole image's tokens (refused here, before any query, on a
        target without usable tokens)."""
        problem = token_problem(target)
        if problem is not None:
            raise needs_tokens_error(self.name, problem)
        return (PartQuery(self.num_parts, _scale(self.crop_scale), self.part_size, self.seed,
                          self.images_per_batch, tokens=True),)

    def features(self, target, images: Images) -> np.ndarray:
        return planned_features(self, target, images)

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        tokens, parts, ref = answer.tokens, answer.parts, answer.reference
        if answer.refused is not None:
            raise needs_tokens_error(self.name, answer.refused)
        if tokens is None or parts is None or ref is None:
            raise needs_tokens_error(self.name, "the target exposes no tokens")
        self._check_width(tokens, parts.shape[-1])
        return self._kl_features(parts, tokens, ref)

    def _check_width(self, tokens: torch.Tensor, width: int | None) -> None:
        if width and tokens.shape[-1] != width:
            raise needs_tokens_error(self.name, f"its tokens have width {tokens.shape[-1]} "
                                     f"and its embeddings {width} (not one space)")

    def _kl_features(
        self, parts: torch.Tensor, tokens: torch.Tensor, ref: torch.Tensor
    ) -> torch.Tensor:
        length = tokens.shape[1]
        if self.similarity == "cosine":
            parts, tokens = F.normalize(parts, dim=-1), F.normalize(tokens, dim=-1)
        logp = torch.log_softmax(parts @ tokens.transpose(1, 2) / self.temperature, dim=-1)
        kl_uniform = -math.log(length) - logp.mean(dim=-1)  # KL(uniform || response)
        kl_gauss = (ref * ((ref + 1e-6).log() - logp)).sum(dim=-1)
        return torch.cat(
            [kl_uniform.sort(1, descending=True).values, kl_gauss.sort(1, descending=True).values],
            dim=1,
        )

    def neural_scorer(self) -> NeuralScorer:
        return NeuralScorer("mlp", epochs=self.epochs, seed=self.seed)

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> PartCrop:
        self.scorer_ = self.neural_scorer().fit(features, is_member)
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return self.scorer_.score(features)


@register_attack(POOLED, family="encoder", aliases=("partcrop-variants",),
                 summary="PartCrop's parts against the whole image's embedding (leakprobe "
                 "variant for targets without usable tokens); black box")
class PartCropPooled(PartCrop):
    """``partcrop-pooled``: PartCrop's parts against the whole image's embedding (no tokens).

    Each part's feature is the cosine of its embedding with the whole image's embedding; the
    K cosines, sorted, go to the same MLP. A leakprobe variant for targets whose tokens are
    not exposed or not in the embedding space, not the paper's method; its report notes say
    so. Same arguments as :class:`PartCrop` minus ``similarity`` and ``temperature``.
    """

    needs_tokens = False

    def __init__(
        self,
        num_parts: int = 128,
        crop_scale: tuple[float, float] = (0.08, 0.2),
        part_size: int | None = None,
        images_per_batch: int = 64,
        epochs: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__(num_parts, crop_scale, part_size, images_per_batch=images_per_batch,
                         epochs=epochs, seed=seed)

    @property
    def name(self) -> str:
        return POOLED

    def query_requests(self, target) -> tuple[Request, ...]:
        """The part crops (no tokens) and the clean image (shared with other attacks)."""
        return (PartQuery(self.num_parts, _scale(self.crop_scale), self.part_size, self.seed,
                          self.images_per_batch, tokens=False), CleanQuery())

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        assert answer.parts is not None and answer.clean is not None
        feats = F.cosine_similarity(answer.parts, answer.clean[:, None], dim=-1)
        return feats.sort(dim=1, descending=True).values

    def report_notes(self, target) -> list[str]:
        """What the report says about these features (the audit adds it to the result)."""
        why = token_problem(target)
        what = f"part-vs-whole embedding cosines ({POOLED}), not the paper's part-vs-token KL"
        return [f"{why}: {what}" if why else f"{what} (chosen by name)"]


@register_attack("partcrop-v2", family="encoder", aliases=("partcrop-variants",),
                 summary="PartCrop-v2 (Zhu et al., arXiv 2505.10351): PartCrop's features, the "
                 "extension's attacker (RMSNorm + Tanh MLP); black box, needs tokens, fitted")
class PartCropV2(PartCrop):
    """``partcrop-v2``: PartCrop's features scored by the attacker of the authors' extension.

    The extension ("A Unified and Scalable Membership Inference Method for Visual
    Self-supervised Encoder via Part-aware Capability", arXiv 2505.10351) keeps PartCrop's
    queries and features; its reference code (``mia_lib/mia_model.py``, ``Adversary_v2``,
    added in Nov. 2024) changes the attacker "for stabilising training": Tanh in place of
    ReLU, and a parameter-free RMSNorm (``x / sqrt(mean(x^2) + 1e-6)``) "to scale the input"
    and after every hidden linear layer. Here: RMSNorm(2K) -> [Linear -> RMSNorm -> Tanh] for
    the widths 512, 256, 128 -> Linear -> 1 (the ``mlp-rmsnorm`` network of
    :mod:`leakprobe.attacks.membership._batched`).

    Departures from the reference code:
    - the shipped class cannot be built (its ``__init__`` calls ``super(Adversary, self)``
      from ``Adversary_v2``, a TypeError) and creates an input RMSNorm that ``forward`` never
      applies; leakprobe builds the network its docstring describes and applies that norm;
    - the reference scripts (``mia_test.py``) still build ``Adversary`` (v1), so v2's training
      recipe is v1's (BCE, Adam 1e-3, weight decay 5e-4, 100 epochs, best epoch kept), which
      is partcrop's here: standardised features, the epoch picked by validation loss on the
      fit data, partcrop's early stopping; ``nn.Linear``'s initialisation instead of
      N(0, 0.01) weights and zero biases (every hidden layer is normalised, so only the
      output layer's scale differs).

    The requests are partcrop's (an audit running both pays the parts once) and so are the
    features: the feature cache keeps one entry for both (:meth:`features_key`). Same
    arguments as :class:`PartCrop`; the name follows the feature settings as partcrop's does
    (``partcrop-v2``, ``partcrop-v2-cosine``...).
    """

    @property
    def name(self) -> str:
        return self._named("partcrop-v2")

    def features_key(self) -> list:
        """PartCrop's key for the same settings: the features are the same floats."""
        return [self._named("partcrop"), self.get_params()]

    def neural_scorer(self) -> NeuralScorer:
        return NeuralScorer(RMS_MLP, epochs=self.epochs, seed=self.seed)
