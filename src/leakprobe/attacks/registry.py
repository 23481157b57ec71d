"""One registry of every attack: looked up by family and name, options routed by signature.

Families (:data:`FAMILIES`):

- ``encoder``: membership inference on encoders (``leakprobe audit encoder --attacks``);
- ``image2image``: membership inference on image-to-image models (``audit image2image``);
- ``captioner``: membership inference on image captioners (``audit captioner``);
- ``image-text``: membership inference on image-text dual encoders (``audit image-text``);
- ``stealing``: encoder stealing methods (``leakprobe steal encoder --method``).

An attack module registers its classes with :func:`register_attack`. One class may be
registered under several names, each with ``fixed`` constructor arguments (``encodermi-set``
is ``EncoderMI(variant="set")``). ``aliases`` puts an attack in named groups (``encodermi``:
its three variants); each family's ``all`` is :attr:`AttackFamily.all`.

Options given for a whole audit (``--num-parts``, ``--n-views``, ``--views``...) reach every
attack whose constructor takes an argument of that name (:func:`route_options`), read from the
signature as :meth:`MembershipAttack.get_params` reads it.

This module imports neither torch nor any attack: a family's modules are imported (and so
register their attacks) on its first look-up.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from leakprobe.errors import LeakprobeError

# Any class: the decorator hands back the class it registers.
C = TypeVar("C", bound=type[Any])


@dataclass(frozen=True)
class AttackFamily:
    """What the attacks of one family attack, and how they are named.

    Attributes:
        name: the family's key (``encoder``...); membership attacks declare the same value
            as their ``target_kind``.
        title: one line for ``leakprobe attacks``.
        modules: the modules whose import registers the family's built-in attacks.
        all: what the alias ``all`` stands for (attacks or aliases, in order); empty: no
            ``all``.
        options: the options a user may set for a whole audit of this family (the CLI's
            flags, a study's ``attack_options``); :func:`route_options` hands each to the
            attacks that take it.
        unknown: the error for a name that is neither an attack nor an alias; fields
            ``{raw}`` (the name as written), ``{name}`` (stripped, lower case), ``{listed}``
            (attacks in registration order, then aliases) and ``{sorted}`` (both, sorted).
    """

    name: str
    title: str
    modules: tuple[str, ...]
    all: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    unknown: str = "unknown attack '{raw}'; known: {sorted}"


FAMILIES: dict[str, AttackFamily] = {f.name: f for f in (
    AttackFamily(
        "encoder", "membership inference on encoders (audit encoder --attacks)",
        ("leakprobe.attacks.membership",),
        all=("partcrop", "encodermi", "lpla", "baseline"),
        options=("num_parts", "n_views", "views")),
    AttackFamily(
        "image2image",
        "membership inference on image-to-image models (audit image2image --attacks)",
        ("leakprobe.attacks.membership.reconstruction",),
        all=("reconstruction", "predictability", "membership-error"),
        options=("pixel_features", "features_weights", "feature_size", "num_classes",
                 "seg_error", "ridge", "images_per_batch"),
        unknown="unknown image-to-image attack '{name}'; known: {listed}"),
    AttackFamily(
        "captioner", "membership inference on image captioners (audit captioner --attacks)",
        ("leakprobe.attacks.membership.m4i",),
        all=("m4i-metric", "m4i-feature"),
        options=("classifier", "extractor_epochs", "device"),
        unknown="unknown captioning attack '{name}'; known: {listed}"),
    AttackFamily(
        "image-text",
        "membership inference on image-text models (audit image-text --attacks)",
        ("leakprobe.attacks.membership.image_text",),
        all=("clip-cosine", "clip-rank", "clip-augment", "clip-augment-mean"),
        options=("n_views", "views"),
        unknown="unknown image-text attack '{name}'; known: {listed}"),
    AttackFamily(
        "stealing", "encoder stealing (steal encoder --method)",
        ("leakprobe.attacks.stealing",),
        all=("contsteal", "contsteal-fresh", "rda", "stolenencoder", "mse", "cosine"),
        options=("views_per_image",),
        unknown="unknown stealing method '{name}'; known: {listed}"),
)}


@dataclass(frozen=True)
class AttackEntry:
    """One registered attack: a class and the constructor arguments its name fixes.

    Attributes:
        name: the registry name (what ``--attacks`` takes and results are reported under).
        family: a key of :data:`FAMILIES`.
        cls: the attack class.
        fixed: constructor arguments set by the name (``{"variant": "set"}``).
        aliases: the groups the attack belongs to, besides its family's ``all``.
        summary: one line: the method and its threat model.
        keep_defaults: constructor arguments that audit-wide options never set: the attack
            keeps its own default (LpLA's ``n_views``: ``--n-views`` is EncoderMI's).
        option_names: constructor argument -> the audit-wide option that sets it, where
            the two names differ (m4i-feature's ``epochs`` is ``extractor_epochs``).
        order: registration order (the order of ``known:`` lists and alias groups).
    """

    name: str
    family: str
    cls: type[Any]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    summary: str = ""
    keep_defaults: tuple[str, ...] = ()
    option_names: Mapping[str, str] = field(default_factory=dict)
    order: int = 0

    def arguments(self) -> list[str]:
        """The constructor arguments a caller may set (those the name fixes excluded)."""
        params = inspect.signature(self.cls).parameters.values()
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in self.fixed]

    def routed(self) -> dict[str, str]:
        """Audit-wide option -> constructor argument, for every option this attack takes."""
        options = FAMILIES[self.family].options
        out = {}
        for arg in self.arguments():
            option = self.option_names.get(arg, arg)
            if option in options and arg not in self.keep_defaults:
                out[option] = arg
        return out

    def create(self, **options: Any) -> Any:
        """The attack object, with ``options`` (constructor arguments) on top of ``fixed``.

        Raises:
            LeakprobeError: an option the constructor does not take or the name fixes.
        """
        allowed = self.arguments()
        for key in options:
            if key not in allowed:
                fixed = f" ({key}={self.fixed[key]!r} is fixed by the name)" \
                    if key in self.fixed else ""
                raise LeakprobeError(f"attack '{self.name}' takes no option '{key}'{fixed}; "
                                     f"it takes: {', '.join(allowed)}")
        return self.cls(**self.fixed, **options)


_ENTRIES: dict[str, dict[str, AttackEntry]] = {name: {} for name in FAMILIES}
_ORDER = itertools.count()


def register_attack_family(family: AttackFamily) -> AttackFamily:
    """Add a family of attacks (a new model family's): then ``register_attack(...,
    family=family.name)`` works and ``leakprobe attacks`` lists it.

    Raises:
        ValueError: a family of that name is already registered.
    """
    if family.name in FAMILIES:
        raise ValueError(f"attack family {family.name!r} is already registered")
    FAMILIES[family.name] = family
    _ENTRIES[family.name] = {}
    return family


def register_attack(
    name: str,
    *,
    family: str,
    aliases: tuple[str, ...] = (),
    summary: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    keep_defaults: tuple[str, ...] = (),
    option_names: Mapping[str, str] | None = None,
) -> Callable[[C], C]:
    """Class decorator registering an attack of ``family`` under ``name``.

    Stack several to register one class under several names (each with its ``fixed``
    arguments); they count in the order they are written.

    Args:
        name: the registry name (lower case, unique in the family, not an alias).
        family: a key of :data:`FAMILIES`.
        aliases: groups the attack belongs to (``("encodermi",)``); ``all`` is the family's.
        summary: one line for ``leakprobe attacks`` (default: the first line of the
            class's module docstring).
        fixed: constructor arguments the name sets (``{"variant": "set"}``).
        keep_defaults: constructor arguments audit-wide options never set.
        option_names: constructor argument -> the audit-wide option that sets it.

    A class registered without ``fixed`` arguments reports under ``name``: the decorator
    sets its ``registered_name``, which the base classes' ``name`` property returns.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown attack family {family!r}; known: {', '.join(FAMILIES)}")
    order = next(_ORDER)  # when the decorator is written, not applied (stacks apply upwards)

    def wrap(cls: C) -> C:
        _check_class(cls, family)
        taken = _ENTRIES[family].keys() | _aliases(family).keys()
        if name in taken or name != name.strip().lower() or "," in name:
            raise ValueError(f"{family} attack name {name!r} is taken or not lower case")
        for alias in aliases:
            if alias in _ENTRIES[family] or alias in (name, "all"):
                raise ValueError(f"{family} alias {alias!r} is an attack's name or 'all'")
        module = sys.modules.get(cls.__module__)
        doc = (module.__doc__ if module is not None else None) or ""
        _ENTRIES[family][name] = AttackEntry(
            name, family, cls, dict(fixed or {}), tuple(aliases),
            summary or doc.strip().split("\n", 1)[0], tuple(keep_defaults),
            dict(option_names or {}), order)
        if not fixed and "registered_name" not in vars(cls):
            cls.registered_name = name
        return cls

    return wrap


def _check_class(cls: type, family: str) -> None:
    """A membership family takes membership attacks of its target kind; stealing, methods."""
    if family == "stealing":
        from leakprobe.attacks.stealing.base import StealingMethod

        if not issubclass(cls, StealingMethod):
            raise TypeError(f"{cls.__name__}: a stealing method must subclass StealingMethod")
        return
    from leakprobe.attacks.membership._common import MembershipAttack

    if not issubclass(cls, MembershipAttack):
        raise TypeError(f"{cls.__name__}: a {family} attack must subclass MembershipAttack")
    if cls.target_kind not in (None, family):
        raise TypeError(f"{cls.__name__} queries a {cls.target_kind} target: not an attack "
                        f"of the {family} family")


def _load(family: str) -> None:
    if family not in FAMILIES:
        raise LeakprobeError(f"unknown attack family '{family}'; known: {', '.join(FAMILIES)}")
    for module in FAMILIES[family].modules:
        importlib.import_module(module)


def entries(family: str) -> list[AttackEntry]:
    """The attacks of ``family`` in registration order."""
    _load(family)
    return sorted(_ENTRIES[family].values(), key=lambda e: e.order)


def _aliases(family: str) -> dict[str, list[str]]:
    """Alias -> what it stands for: the registered groups, then ``all``."""
    groups: dict[str, list[str]] = {}
    for entry in sorted(_ENTRIES[family].values(), key=lambda e: e.order):
        for alias in entry.aliases:
            groups.setdefault(alias, []).append(entry.name)
    if FAMILIES[family].all:
        groups["all"] = list(FAMILIES[family].all)
    return groups


def aliases(family: str) -> dict[str, list[str]]:
    """Alias -> the attacks and aliases it stands for, in order (``all`` last)."""
    _load(family)
    return _aliases(family)


def attack_entry(name: str, *, family: str) -> AttackEntry:
    """The registered attack ``name`` of ``family``.

    Raises:
        LeakprobeError: an unknown name (the family's message, listing the known ones).
    """
    _load(family)
    if name not in _ENTRIES[family]:
        raise _unknown(family, name, name, with_aliases=False)
    return _ENTRIES[family][name]


def _unknown(family: str, raw: str, name: str, with_aliases: bool = True) -> LeakprobeError:
    """The family's error for an unknown name; it lists aliases where they are accepted and
    ends with the closest known name (``(did you mean 'partcrop'?)``) when one is close."""
    import difflib

    attacks = [e.name for e in entries(family)]
    groups = list(_aliases(family)) if with_aliases else []
    message = FAMILIES[family].unknown.format(
        raw=raw, name=name, listed=", ".join(attacks + groups),
        sorted=", ".join(sorted(set(attacks) | set(groups))))
    close = difflib.get_close_matches(name.strip().lower(), attacks + groups, n=1, cutoff=0.6)
    return LeakprobeError(message + (f" (did you mean '{close[0]}'?)" if close else ""))


def create_attack(name: str, *, family: str, **options: Any) -> Any:
    """Build the attack ``name`` of ``family`` with constructor ``options``.

    Raises:
        LeakprobeError: an unknown name, or an option the attack does not take.
    """
    return attack_entry(name, family=family).create(**options)


def route_options(name: str, options: Mapping[str, Any], *, family: str) -> dict[str, Any]:
    """The audit-wide ``options`` attack ``name`` takes, as its constructor arguments.

    An option reaches every attack whose constructor has an argument of its name (or the
    argument the entry's ``option_names`` maps it to), unless the name fixes that argument
    or the entry keeps its default. Options set to None are not set; options outside the
    family's :attr:`AttackFamily.options` reach no attack.
    """
    routed = attack_entry(name, family=family).routed()
    return {routed[k]: v for k, v in options.items() if k in routed and v is not None}


def expand_attacks(
    spec: str | list[str], *, family: str, no_tokens: str | None = None
) -> list[str]:
    """``"partcrop,encodermi"`` -> attack names of ``family``, aliases expanded, order kept.

    Names are stripped and lower-cased; an attack reached twice is kept once.

    Args:
        spec: comma list or list of attack names and aliases.
        family: a key of :data:`FAMILIES`.
        no_tokens: why the target's tokens cannot serve a token attack (``needs_tokens``:
            PartCrop's; see :func:`~leakprobe.attacks.membership.partcrop.token_problem`),
            or None. When given, a token attack reached through an alias becomes
            ``partcrop-pooled`` and one named explicitly is an error.
    Raises:
        LeakprobeError: an unknown name, or an explicit token attack under ``no_tokens``.
    """
    out: list[str] = []
    for name, via_alias in _expand(spec, family, False):
        if no_tokens and _needs_tokens(attack_entry(name, family=family)):
            from leakprobe.attacks.membership.partcrop import POOLED, needs_tokens_error

            if not via_alias:
                raise needs_tokens_error(name, no_tokens)
            name = POOLED
        if name not in out:
            out.append(name)
    return out


def _needs_tokens(entry: AttackEntry) -> bool:
    return entry.family != "stealing" and bool(entry.cls.needs_tokens)


def _expand(spec: str | list[str], family: str, via_alias: bool) -> list[tuple[str, bool]]:
    groups = aliases(family)
    out: list[tuple[str, bool]] = []
    for raw in spec.split(",") if isinstance(spec, str) else list(spec):
        name = raw.strip().lower()
        if not name:
            continue
        if name in groups:
            out += _expand(groups[name], family, True)
        elif name in _ENTRIES[family]:
            out.append((name, via_alias))
        else:
            raise _unknown(family, raw, name)
    return out


def describe_attacks() -> dict[str, list[dict[str, Any]]]:
    """Family -> its attacks in registration order: ``name``, ``aliases``, ``summary``.

    An attack's aliases are every alias that runs it (``encodermi-set``: ``encodermi``,
    ``all``).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for family in FAMILIES:
        groups = aliases(family)
        reached = {alias: {n for n, _ in _expand(members, family, True)}
                   for alias, members in groups.items()}
        out[family] = [{"name": e.name, "aliases": [a for a in groups if e.name in reached[a]],
                        "summary": e.summary} for e in entries(family)]
    return out


class AttackTable(Mapping[str, Callable[..., Any]]):
    """A read-only, live view of one family: attack name -> its factory.

    A name with fixed arguments maps to a function that builds it; one without maps to the
    class itself. Kept for the old tables (``ENCODER_ATTACKS``, ``CAPTION_ATTACKS``,
    ``STEALING_METHODS``).
    """

    def __init__(self, family: str) -> None:
        self.family = family

    def __getitem__(self, name: str) -> Callable[..., Any]:
        _load(self.family)
        entry = _ENTRIES[self.family][name]
        return entry.create if entry.fixed else entry.cls

    def __iter__(self) -> Iterator[str]:
        return iter([e.name for e in entries(self.family)])

    def __len__(self) -> int:
        return len(entries(self.family))


class AliasTable(Mapping[str, list[str]]):
    """A read-only, live view of one family's aliases (the old ``ALIASES``)."""

    def __init__(self, family: str) -> None:
        self.family = family

    def __getitem__(self, alias: str) -> list[str]:
        return list(aliases(self.family)[alias])

    def __iter__(self) -> Iterator[str]:
        return iter(aliases(self.family))

    def __len__(self) -> int:
        return len(aliases(self.family))
