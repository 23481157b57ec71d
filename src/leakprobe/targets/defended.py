"""A local encoder target whose every answer goes through an answer defence.

``leakprobe steal encoder --target-defence SPEC`` attacks a local model as if it were served
by ``leakprobe serve encoder`` with the same defence: :class:`DefendedEncoder` applies the
:class:`~leakprobe.defences.answers.AnswerDefence` the server applies (the same code, the
same seeded CPU noise), so the stolen copy learns from exactly the answers a served target
would give. Targets behind HTTP are refused: their server perturbs its own answers.
"""

from __future__ import annotations

from typing import Any

import torch

from leakprobe.defences.answers import AnswerDefence
from leakprobe.errors import LeakprobeError

__all__ = ["HTTP_TARGET_REFUSAL", "DefendedEncoder", "check_defendable",
           "refuse_remote_defence"]

#: The one-line refusal of a target served over HTTP.
HTTP_TARGET_REFUSAL = (
    "the target is served over HTTP: its server applies its own defences (leakprobe serve "
    "encoder --noise/--top-k/--round-decimals); --target-defence applies to local targets "
    "only")


def _served_over_http(target: object) -> bool:
    """Whether ``target`` is an HTTP client (:mod:`leakprobe.serving.client`) or looks like
    one (a ``url`` attribute)."""
    from leakprobe.serving.client import HTTPTarget

    return isinstance(target, HTTPTarget) or isinstance(getattr(target, "url", None), str)


def check_defendable(target: object) -> None:
    """Refuse a target an answer defence cannot be applied to: one served over HTTP.

    Raises:
        LeakprobeError: :data:`HTTP_TARGET_REFUSAL`, when ``target`` is an HTTP client
            (or has a ``url`` attribute).
    """
    if _served_over_http(target):
        raise LeakprobeError(HTTP_TARGET_REFUSAL)


def refuse_remote_defence(model: str) -> None:
    """Refuse a ``--model`` given as a URL before anything is loaded or queried.

    Raises:
        LeakprobeError: :data:`HTTP_TARGET_REFUSAL`, when ``model`` starts with ``http://``
            or ``https://``.
    """
    if model.strip().lower().startswith(("http://", "https://")):
        raise LeakprobeError(HTTP_TARGET_REFUSAL)


class DefendedEncoder:
    """An :class:`~leakprobe.targets.encoder.Encoder` whose embeddings are perturbed.

    ``embed(images)`` is ``defence.apply(target.embed(images), generator=...)`` with the
    wrapper's own CPU generator seeded by ``seed``: the same seed and the same sequence of
    queries give the same answers, on every device, as ``leakprobe serve encoder`` with the
    same defence and ``--seed``. Queries are counted by the wrapped target (once per image).
    Every other attribute (``input_size``, ``embed_dim``, ``queries``, ``max_queries``,
    ``device``, ``batch_size``, ...) is read from the wrapped target; ``name`` adds the
    defence (``"resnet [defence: noise:0.05]"``). Attributes set on the wrapper stay on the
    wrapper.

    Tokens are answered only under the identity defence (``none``): the defences perturb
    embeddings, so a defended target declares ``has_tokens`` False and :meth:`tokens`
    refuses.

    Args:
        target: the local encoder target wrapped.
        defence: the answer defence applied to every embedding.
        seed: seeds the noise.

    Raises:
        LeakprobeError: ``target`` is served over HTTP (its server applies its own defences).
    """

    def __init__(self, target: Any, *, defence: AnswerDefence, seed: int = 0) -> None:
        check_defendable(target)
        self.target = target
        self.defence = defence
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __getattr__(self, name: str) -> Any:
        # only called for what the wrapper lacks; "target" missing means a half-built object
        # (copy, unpickling): no forwarding then, and no recursion
        if name.startswith("__") or "target" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["target"], name)

    def __repr__(self) -> str:
        return f"DefendedEncoder({self.target!r}, defence={self.defence.spec!r}, seed={self.seed})"

    @property
    def name(self) -> str:
        """The wrapped target's name with the defence: ``"NAME [defence: SPEC]"``."""
        inner = getattr(self.target, "name", None) or type(self.target).__name__
        return f"{inner} [defence: {self.defence.spec}]"

    @property
    def input_size(self) -> int:
        """The wrapped target's input side (setting it sets the wrapped target's)."""
        return int(self.target.input_size)

    @input_size.setter
    def input_size(self, value: int) -> None:
        self.target.input_size = value

    @property
    def queries(self) -> int:
        """Images queried so far (the wrapped target's count)."""
        return int(self.target.queries)

    @property
    def has_tokens(self) -> bool:
        """Whether :meth:`tokens` answers: the wrapped target's, under the identity only."""
        return self.defence.is_identity and bool(getattr(self.target, "has_tokens", False))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) embeddings of the wrapped target, perturbed by the
        defence (the generator advances by B * D draws when the defence adds noise)."""
        return self.defence.apply(self.target.embed(images), generator=self.generator)

    def tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        """The wrapped target's tokens under the identity defence.

        Raises:
            LeakprobeError: any other defence (tokens of a defended target are not
                supported).
        """
        if not self.defence.is_identity:
            raise LeakprobeError(
                f"tokens of a defended target are not supported (answer defence "
                f"{self.defence.spec} perturbs embeddings only); use --target-defence none "
                "or an attack that needs embeddings only")
        return self.target.tokens(images)
