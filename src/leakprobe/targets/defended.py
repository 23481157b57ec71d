"""A local encoder target whose every answer goes through an answer defence.

``leakprobe steal encoder --target-defence SPEC`` attacks a local model as if it were served
by ``leakprobe serve encoder`` with the same defence: :class:`DefendedEncoder` applies the
:class:`~leakprobe.defences.answers.AnswerDefence` the server applies (the same code, the
same seeded CPU noise), so the stolen copy learns from exactly the answers a served target
would give. Targets behind HTTP are refused: their server perturbs its own answers.

Under B4B (``--target-defence b4b``) the wrapper is one client of the defended service: its
coverage grows with every answer, in query order, and one ``embed`` call is answered as
consecutive requests of ``request_size`` images (the server's default ``--max-batch``), one
coverage update each, as a served target would answer the same queries.
:meth:`DefendedEncoder.answer_state` and :meth:`DefendedEncoder.load_answer_state` carry the
wrapper's state (its noise generator and the client's coverage) across a resumed steal: the
query cache stores it with every chunk it saves.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

from leakprobe.defences.answers import AnswerDefence
from leakprobe.defences.b4b import B4BClient
from leakprobe.errors import LeakprobeError

__all__ = ["HTTP_TARGET_REFUSAL", "DefendedEncoder", "check_defendable",
           "refuse_remote_defence"]

#: The one-line refusal of a target served over HTTP.
HTTP_TARGET_REFUSAL = (
    "the target is served over HTTP: its server applies its own defences (leakprobe serve "
    "encoder --defence/--noise/--top-k/--round-decimals); --target-defence applies to local "
    "targets only")
#: Images per request of a local B4B target: ``leakprobe serve encoder``'s default
#: ``--max-batch``.
DEFAULT_REQUEST_SIZE = 256
_STATE_FORMAT = "defended-encoder-1"


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

    Under B4B the wrapper is one client (:attr:`client`, created at the first answer: its
    hyperplanes and transformation seeded by ``seed``), answered in requests of
    ``request_size`` images.

    Args:
        target: the local encoder target wrapped.
        defence: the answer defence applied to every embedding.
        seed: seeds the noise (and B4B's hash functions and transformation).
        request_size: images per request under B4B (coverage is updated once per request).

    Raises:
        LeakprobeError: ``target`` is served over HTTP (its server applies its own defences),
            or ``request_size`` < 1.
    """

    def __init__(self, target: Any, *, defence: AnswerDefence, seed: int = 0,
                 request_size: int = DEFAULT_REQUEST_SIZE) -> None:
        check_defendable(target)
        if request_size < 1:
            raise LeakprobeError(f"request_size must be >= 1, got {request_size}")
        self.target = target
        self.defence = defence
        self.seed = int(seed)
        self.request_size = int(request_size)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.client: B4BClient | None = None
        self.answered = 0

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
        defence (the generator advances by B * D draws when the defence adds noise).

        Under B4B the B rows are answered as consecutive requests of :attr:`request_size`
        images, the coverage growing after each.
        """
        clean = self.target.embed(images)
        if self.defence.b4b is None:
            out = self.defence.apply(clean, generator=self.generator)
        else:
            if self.client is None:
                self.client = self.defence.b4b.client(int(clean.shape[1]), seed=self.seed,
                                                      transform_seed=self.seed)
            out = torch.cat([self.defence.apply(part, generator=self.generator,
                                                client=self.client)
                             for part in clean.split(self.request_size)]) \
                if clean.shape[0] else clean
        self.answered += int(clean.shape[0])
        return out

    def answer_state(self) -> dict:
        """The wrapper's state, JSON-able: the defence, seed, images answered, the noise
        generator's state and the B4B client's (None before the first answer)."""
        gen = self.generator.get_state().numpy().tobytes()
        return {"format": _STATE_FORMAT, "defence": self.defence.spec, "seed": self.seed,
                "request_size": self.request_size, "answered": self.answered,
                "generator": base64.b64encode(gen).decode("ascii"),
                "b4b": None if self.client is None else self.client.to_state()}

    def load_answer_state(self, state: dict) -> None:
        """Continue from :meth:`answer_state` (a resumed steal): the same later answers as
        a run that was never interrupted.

        Raises:
            LeakprobeError: a state of another defence, seed or request size, or a damaged
                one.
        """
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise LeakprobeError("not a defended target's state (damaged or of another "
                                 "version)")
        mine = (self.defence.spec, self.seed, self.request_size)
        theirs = (state.get("defence"), state.get("seed"), state.get("request_size"))
        if theirs != mine:
            raise LeakprobeError(f"the saved answer state is of defence {theirs[0]}, seed "
                                 f"{theirs[1]}, request size {theirs[2]}; this run uses "
                                 f"{mine[0]}, seed {mine[1]}, request size {mine[2]}")
        try:
            raw = base64.b64decode(state["generator"], validate=True)
            generator = torch.Generator()
            generator.set_state(torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()))
            answered = int(state["answered"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise LeakprobeError("a damaged defended target's state (its generator)") from e
        client = None
        if state.get("b4b") is not None:
            if self.defence.b4b is None:
                raise LeakprobeError("the saved answer state has a b4b client, the defence "
                                     "has no b4b")
            client = B4BClient.from_state(self.defence.b4b, state["b4b"])
        self.generator, self.answered, self.client = generator, answered, client

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
