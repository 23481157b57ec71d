"""Answer defences: perturb what an encoder answers, so that stealing it costs more.

An :class:`AnswerDefence` changes every embedding a target hands out, in this order:

0. ``b4b`` (``b4b`` or ``b4b:lambda=1e-6,alpha=1,beta=80,transform=affine``): B4B's
   coverage-dependent noise and per-client transformation (:mod:`leakprobe.defences.b4b`).
   Unlike the others it has a state per client, its coverage: :meth:`AnswerDefence.apply`
   takes the client's :class:`~leakprobe.defences.b4b.B4BClient`;
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
``noise:0.05+round:2`` or ``b4b+round:3``; :attr:`AnswerDefence.spec` writes the canonical
form back. B4B's settings are ``NAME=VALUE`` pairs separated by ``,`` or ``;``
(``lambda``, ``alpha``, ``beta``, ``transform``, ``hashes``, ``bits``; the paper's values by
default). :func:`parse_answer_defences` reads a comma-separated list of specs, one row of a
study each; an item that starts with ``NAME=`` continues the B4B settings of the item before
it, so ``b4b:alpha=1,beta=40,noise:0.1`` is two rows: ``b4b:beta=40`` and ``noise:0.1``.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

import torch

from leakprobe.defences.b4b import B4B, TRANSFORMS, B4BClient
from leakprobe.errors import LeakprobeError

__all__ = ["ANSWER_DEFENCE_FORMS", "AnswerDefence", "parse_answer_defence",
           "parse_answer_defences"]

#: The accepted forms of one answer defence, as every parse error lists them.
ANSWER_DEFENCE_FORMS = ("use none, noise:STD, round:DECIMALS, topk:K, "
                        "b4b[:lambda=L,alpha=A,beta=B,transform=T] (join with +)")

_KINDS = ("noise", "round", "topk", "b4b")
_FORMS = {"noise": "noise:STD", "round": "round:DECIMALS", "topk": "topk:K",
          "b4b": "b4b[:lambda=L,alpha=A,beta=B,transform=T]"}
#: B4B's settings in a spec -> the :class:`~leakprobe.defences.b4b.B4B` field.
_B4B_NAMES = {"lambda": "lam", "lam": "lam", "alpha": "alpha", "beta": "beta",
              "transform": "transform", "hashes": "hashes", "bits": "bits"}
_CONTINUATION = re.compile(r"^\s*[A-Za-z_]+\s*=")


def _number_text(value: float) -> str:
    """The shortest text that reads back as ``value`` (``0.05``, ``1``, ``1e-07``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class AnswerDefence:
    """Perturbations of an encoder's answers: B4B, then noise, then top-k, then rounding.

    Attributes:
        noise: standard deviation of the Gaussian noise added to every coordinate
            (0: none).
        top_k: keep only the ``top_k`` largest-magnitude coordinates of each row, zero the
            rest (None: all kept).
        round_decimals: round every coordinate to this many decimals (None: not rounded).
        b4b: B4B's settings (None: off); its per-client state is passed to :meth:`apply`.

    Raises:
        LeakprobeError: a negative or non-finite ``noise``, a ``top_k`` below 1 or a
            negative ``round_decimals``.
    """

    noise: float = 0.0
    top_k: int | None = None
    round_decimals: int | None = None
    b4b: B4B | None = None

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
        return (not self.noise and self.top_k is None and self.round_decimals is None
                and self.b4b is None)

    @property
    def stateful(self) -> bool:
        """Whether answers depend on a per-client state (B4B's coverage)."""
        return self.b4b is not None

    @property
    def spec(self) -> str:
        """The canonical text (``b4b+noise:0.05+topk:8+round:2``; ``none`` for the identity).

        :func:`parse_answer_defence` reads it back to an equal defence.
        """
        parts = []
        if self.b4b is not None:
            parts.append(self.b4b.spec)
        if self.noise:
            parts.append(f"noise:{_number_text(self.noise)}")
        if self.top_k is not None:
            parts.append(f"topk:{int(self.top_k)}")
        if self.round_decimals is not None:
            parts.append(f"round:{int(self.round_decimals)}")
        return "+".join(parts) or "none"

    def to_dict(self) -> dict:
        """The defences set, as ``/v1/info`` announces them: ``noise``, ``top_k``,
        ``round_decimals``, ``b4b`` (its settings: ``lambda``, ``alpha``, ``beta``,
        ``transform``, ``hashes``, ``bits``), only those set (``{}`` for the identity)."""
        out: dict = {}
        if self.noise:
            out["noise"] = self.noise
        if self.top_k is not None:
            out["top_k"] = self.top_k
        if self.round_decimals is not None:
            out["round_decimals"] = self.round_decimals
        if self.b4b is not None:
            out["b4b"] = self.b4b.to_dict()
        return out

    def apply(self, embeddings: torch.Tensor, *, generator: torch.Generator,
              client: B4BClient | None = None) -> torch.Tensor:
        """``embeddings`` (B, D), one request's answers, perturbed: B4B, then noise, then
        top-k, then rounding.

        Args:
            embeddings: the answers, on any device, in any floating dtype.
            generator: a CPU generator the noise is drawn from (advanced by B * D normal
                draws for B4B and again for ``noise``, untouched otherwise). The same seed
                and the same sequence of queries give the same answers on every device.
            client: the requesting client's B4B state (needed with ``b4b``; its coverage
                grows by this request).

        Returns:
            The perturbed answers on the device and in the dtype of ``embeddings``; for the
            identity, ``embeddings`` itself.

        Raises:
            LeakprobeError: ``b4b`` is set and no ``client`` is given.
        """
        emb = embeddings
        if self.b4b is not None:
            if client is None:
                raise LeakprobeError("the b4b answer defence answers a client: pass its "
                                     "B4BClient (leakprobe serve and DefendedEncoder keep one "
                                     "per client)")
            emb = client.answer(emb, generator=generator)
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
    if close[0] == "b4b":
        guess = f"b4b:{value}" if value else "b4b"
    elif close[0] != "none" and value:
        guess = f"{close[0]}:{value}"
    return f" (did you mean '{guess}'?)"


_NEEDS = {"noise": "STD a number > 0", "topk": "K an integer >= 1",
          "round": "DECIMALS an integer >= 0"}


def _b4b(part: str, settings: str) -> B4B:
    """B4B's settings of one ``b4b[:NAME=VALUE,...]`` part (``,`` or ``;`` between pairs)."""
    fields: dict[str, float | int | str] = {}
    if not settings:
        return B4B()
    for raw in re.split(r"[,;]", settings):
        pair = raw.strip()
        name, eq, value = (t.strip() for t in pair.partition("="))
        name = name.lower()
        if not pair or not eq or not value:
            raise _refuse(f"bad b4b setting '{pair}' in '{part}': use NAME=VALUE, NAME one of "
                          f"{', '.join(n for n in _B4B_NAMES if n != 'lam')}")
        if name not in _B4B_NAMES:
            close = difflib.get_close_matches(name, list(_B4B_NAMES), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}={value}'?)" if close else ""
            raise _refuse(f"unknown b4b setting '{name}' in '{part}'{hint}")
        field = _B4B_NAMES[name]
        if field in fields:
            raise _refuse(f"b4b setting '{name}' given twice in '{part}'")
        if field == "transform":
            if value.lower() not in TRANSFORMS:
                close = difflib.get_close_matches(value.lower(), TRANSFORMS, n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise _refuse(f"unknown b4b transform '{value}'{hint}: use "
                              f"{', '.join(TRANSFORMS)}")
            fields[field] = value.lower()
            continue
        number: float | int | None
        try:
            number = int(value) if field in ("hashes", "bits") else float(value)
        except ValueError:
            number = None
        if field in ("hashes", "bits"):
            valid = number is not None and number >= 1 and (field == "hashes" or number <= 24)
            need = "an integer >= 1" if field == "hashes" else "an integer from 1 to 24"
        else:
            valid = number is not None and math.isfinite(number) and number > 0
            need = "a number > 0"
        if number is None or not valid:
            raise _refuse(f"bad b4b setting '{pair}': {name} needs {need}, got '{value}'")
        fields[field] = number
    return B4B(**fields)  # type: ignore[arg-type]


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
    ``noise:STD`` (STD > 0), ``round:DECIMALS`` (an integer >= 0), ``topk:K`` (an
    integer >= 1) or ``b4b[:NAME=VALUE,...]`` (``lambda``, ``alpha``, ``beta`` numbers > 0,
    ``transform`` one of ``none``, ``affine``, ``shuffle``, ``affine-shuffle``, ``hashes``,
    ``bits``; ``,`` or ``;`` between pairs), each kind at most once, in any order.

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
    b4b: B4B | None = None
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
        if kind == "b4b":
            if b4b is not None:
                raise _refuse(f"answer defence 'b4b' given twice in '{spec}'")
            if colon and not value:
                raise _refuse(f"answer defence '{part}' needs settings after ':': "
                              f"{_FORMS['b4b']}, or plain b4b")
            b4b = _b4b(part, value)
            continue
        if not colon or not value:
            raise _refuse(f"answer defence '{part}' needs a value: {_FORMS[kind]}")
        if kind in values:
            raise _refuse(f"answer defence '{kind}' given twice in '{spec}'")
        values[kind] = _value(part, kind, value)
    top_k = values.get("topk")
    decimals = values.get("round")
    return AnswerDefence(noise=float(values.get("noise", 0.0)),
                         top_k=None if top_k is None else int(top_k),
                         round_decimals=None if decimals is None else int(decimals), b4b=b4b)


def parse_answer_defences(text: str) -> list[AnswerDefence]:
    """Read a comma-separated list of answer defences (each one row of a study).

    Duplicates (the same defence, however written) are dropped, keeping the first; the
    order is kept. An item starting with ``NAME=`` continues the B4B settings of the item
    before it (``b4b:alpha=1,beta=40`` is one item), so the settings may be separated by
    commas here too.

    Raises:
        LeakprobeError: an empty list or item, or a bad item (see
            :func:`parse_answer_defence`).
    """
    if not text.strip():
        raise _refuse("empty list of answer defences")
    items: list[str] = []
    for item in text.split(","):
        if not item.strip():
            raise _refuse(f"empty item in the answer defence list '{text.strip()}'")
        if _CONTINUATION.match(item):
            if not items or "b4b:" not in items[-1].replace(" ", "").lower():
                raise _refuse(f"'{item.strip()}' in the answer defence list "
                              f"'{text.strip()}' continues no b4b settings (write "
                              "b4b:NAME=VALUE,...)")
            items[-1] += "," + item
            continue
        items.append(item)
    out: list[AnswerDefence] = []
    for item in items:
        defence = parse_answer_defence(item)
        if defence not in out:
            out.append(defence)
    return out
