"""Answer defences: perturb what an encoder answers, so that stealing it costs more.

An :class:`AnswerDefence` changes every embedding a target hands out, in this order:

1. ``noise`` (``noise:STD``): add Gaussian noise of standard deviation ``STD`` to every
   coordinate. The noise is drawn on the CPU from the caller's ``torch.Generator`` and then
   moved to the embeddings' device and dtype, so the answers depend on the seed and on the
   order of the queries only, never on the device;
2. ``top_k`` (``topk:K``): keep the ``K`` largest-magnitude coordinates of each row and zero
   the rest (all of them when a row has ``K`` or fewer);
3. ``round_decimals`` (``round:DECIMALS``): round every coordinate to ``DECIMALS`` decimals.

The same code perturbs the answers of ``leakprobe serve encoder`` (``--noise``, ``--top-k``,
``--round-decimals``; :class:`~leakprobe.serving.server.EncoderService`) and of a local target
wrapped for ``leakprobe steal encoder --target-defence SPEC``
(:class:`~leakprobe.targets.defended.DefendedEncoder`): a steal against a defended local
target sees exactly what a steal against the same model served with the same defence and
seed sees.

``SPEC`` (:func:`parse_answer_defence`) is ``none`` or parts joined with ``+``, each kind at
most once, in any order (the order of application is always the one above), e.g.
``noise:0.05+round:2``; :attr:`AnswerDefence.spec` writes the canonical form back.
:func:`parse_answer_defences` reads a comma-separated list of specs, one row of a study each.

B4B (a coverage-based defence that answers a query according to how much of the embedding
space the querying user has covered; a separate issue) will join the answer defences here.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import torch

from leakprobe.errors import LeakprobeError

__all__ = ["ANSWER_DEFENCE_FORMS", "AnswerDefence", "parse_answer_defence",
           "parse_answer_defences"]

#: The accepted forms of one answer defence, as every parse error lists them.
ANSWER_DEFENCE_FORMS = "use none, noise:STD, round:DECIMALS, topk:K (join with +)"

_KINDS = ("noise", "round", "topk")
_FORMS = {"noise": "noise:STD", "round": "round:DECIMALS", "topk": "topk:K"}


def _number_text(value: float) -> str:
    """The shortest text that reads back as ``value`` (``0.05``, ``1``, ``1e-07``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class AnswerDefence:
    """Perturbations of an encoder's answers: noise, then top-k, then rounding.

    Attributes:
        noise: standard deviation of the Gaussian noise added to every coordinate
            (0: none).
        top_k: keep only the ``top_k`` largest-magnitude coordinates of each row, zero the
            rest (None: all kept).
        round_decimals: round every coordinate to this many decimals (None: not rounded).

    Raises:
        LeakprobeError: a negative or non-finite ``noise``, a ``top_k`` below 1 or a
            negative ``round_decimals``.
    """

    noise: float = 0.0
    top_k: int | None = None
    round_decimals: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise LeakprobeError(f"answer defence noise must be a finite std >= 0, got "
                                 f"{self.noise!r}")
        if self.top_k is not None and self.top_k < 1:
            raise LeakprobeError(f"answer defence top_k must be >= 1, got {self.top_k!r}")
        if self.round_decimals is not None and self.round_decimals < 0:
            raise LeakprobeError(f"answer defence round_decimals must be >= 0, got "
                                 f"{self.round_decimals!r}")

    @property
    def is_identity(self) -> bool:
        """Whether the defence leaves every answer as it is (``none``)."""
        return not self.noise and self.top_k is None and self.round_decimals is None

    @property
    def spec(self) -> str:
        """The canonical text (``noise:0.05+topk:8+round:2``; ``none`` for the identity).

        :func:`parse_answer_defence` reads it back to an equal defence.
        """
        parts = []
        if self.noise:
            parts.append(f"noise:{_number_text(self.noise)}")
        if self.top_k is not None:
            parts.append(f"topk:{int(self.top_k)}")
        if self.round_decimals is not None:
            parts.append(f"round:{int(self.round_decimals)}")
        return "+".join(parts) or "none"

    def to_dict(self) -> dict:
        """The defences set, as ``/v1/info`` announces them: ``noise``, ``top_k``,
        ``round_decimals`` (only those set; ``{}`` for the identity)."""
        out: dict = {}
        if self.noise:
            out["noise"] = self.noise
        if self.top_k is not None:
            out["top_k"] = self.top_k
        if self.round_decimals is not None:
            out["round_decimals"] = self.round_decimals
        return out

    def apply(self, embeddings: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """``embeddings`` (B, D) perturbed: noise, then top-k, then rounding.

        Args:
            embeddings: the answers, on any device, in any floating dtype.
            generator: a CPU generator the noise is drawn from (advanced by B * D normal
                draws when ``noise`` is set, untouched otherwise). The same seed and the same
                sequence of queries give the same answers on every device.

        Returns:
            The perturbed answers on the device and in the dtype of ``embeddings``; for the
            identity, ``embeddings`` itself.
        """
        emb = embeddings
        if self.noise:
            draw = torch.randn(tuple(emb.shape), generator=generator, dtype=torch.float32)
            emb = emb + self.noise * draw.to(device=emb.device, dtype=emb.dtype)
        if self.top_k is not None:
            keep = emb.abs().topk(min(self.top_k, emb.shape[-1]), dim=-1).indices
            emb = torch.zeros_like(emb).scatter(-1, keep, emb.gather(-1, keep))
        if self.round_decimals is not None:
            emb = torch.round(emb, decimals=self.round_decimals)
        return emb


def _refuse(message: str) -> LeakprobeError:
    return LeakprobeError(f"{message}; {ANSWER_DEFENCE_FORMS}")


def _suggestion(part: str, kind: str) -> str:
    """`` (did you mean 'noise:0.1'?)`` when ``kind`` is close to a known one, else ``""``."""
    close = difflib.get_close_matches(kind, ("none", *_KINDS), n=1, cutoff=0.6)
    if not close:
        return ""
    value = part.partition(":")[2].strip()
    guess = _FORMS[close[0]] if close[0] != "none" else "none"
    if close[0] != "none" and value:
        guess = f"{close[0]}:{value}"
    return f" (did you mean '{guess}'?)"


_NEEDS = {"noise": "STD a number > 0", "topk": "K an integer >= 1",
          "round": "DECIMALS an integer >= 0"}


def _value(part: str, kind: str, value: str) -> float | int:
    """The number of one ``kind:value`` part, checked against its kind's range."""
    number: float | int | None
    try:
        number = float(value) if kind == "noise" else int(value)
    except ValueError:
        number = None
    if kind == "noise":
        valid = number is not None and math.isfinite(number) and number > 0
    else:
        valid = number is not None and number >= (1 if kind == "topk" else 0)
    if number is None or not valid:
        raise _refuse(f"bad answer defence '{part}': {_FORMS[kind]} needs {_NEEDS[kind]}, "
                      f"got '{value}'")
    return number


def parse_answer_defence(text: str) -> AnswerDefence:
    """Read one answer defence: ``none``, or ``PART(+PART)*`` with each PART one of
    ``noise:STD`` (STD > 0), ``round:DECIMALS`` (an integer >= 0) or ``topk:K`` (an
    integer >= 1), each kind at most once, in any order.

    Raises:
        LeakprobeError: one line naming the bad part and the accepted forms (with a
            did-you-mean for a misspelt kind).
    """
    spec = text.strip()
    if not spec:
        raise _refuse("empty answer defence")
    if spec.lower() == "none":
        return AnswerDefence()
    values: dict[str, float | int] = {}
    for raw in spec.split("+"):
        part = raw.strip()
        if not part:
            raise _refuse(f"empty part in answer defence '{spec}'")
        kind, colon, value = (s.strip() for s in part.partition(":"))
        kind = kind.lower()
        if kind == "none":
            raise _refuse(f"answer defence '{spec}': none cannot be joined with other parts")
        if kind not in _KINDS:
            raise _refuse(f"unknown answer defence '{part}'{_suggestion(part, kind)}")
        if not colon or not value:
            raise _refuse(f"answer defence '{part}' needs a value: {_FORMS[kind]}")
        if kind in values:
            raise _refuse(f"answer defence '{kind}' given twice in '{spec}'")
        values[kind] = _value(part, kind, value)
    top_k = values.get("topk")
    decimals = values.get("round")
    return AnswerDefence(noise=float(values.get("noise", 0.0)),
                         top_k=None if top_k is None else int(top_k),
                         round_decimals=None if decimals is None else int(decimals))


def parse_answer_defences(text: str) -> list[AnswerDefence]:
    """Read a comma-separated list of answer defences (each one row of a study).

    Duplicates (the same defence, however written) are dropped, keeping the first; the
    order is kept.

    Raises:
        LeakprobeError: an empty list or item, or a bad item (see
            :func:`parse_answer_defence`).
    """
    if not text.strip():
        raise _refuse("empty list of answer defences")
    out: list[AnswerDefence] = []
    for item in text.split(","):
        if not item.strip():
            raise _refuse(f"empty item in the answer defence list '{text.strip()}'")
        defence = parse_answer_defence(item)
        if defence not in out:
            out.append(defence)
    return out
