"""Study configuration: YAML -> typed, validated dataclasses with defaults.

A study is a grid *paradigms x defences x settings x seeds*; every grid cell trains a target
encoder (or reuses a shared training run), audits it and measures its utility. The YAML
accepts exactly the keys below; an unknown key or a bad value is a :class:`LeakprobeError`
naming the key path (``defences[2].noise_multiplier: ...``)::

    name: cpu-small                 # label of the study (report title)
    out: runs/study                 # optional; ``--out`` overrides it
    data: synthetic:512             # data spec (see leakprobe.data.loaders.load_dataset)
    data_seed: 0                    # generator seed of synthetic data (fixed across cells)
    image_size: 32
    members: 128                    # member / non-member images per cell (split by the seed)
    nonmembers: 128
    seeds: [0]                      # split, training, attack and utility seed of each cell
    attacks: [partcrop, encodermi, lpla, baseline-norm]
    attack_options: {num_parts: 128, n_views: 10, views: simclr}   # views: see leakprobe.views
    knowledge: {setting: known-subset, folds: 2, repeats: 1, permutations: 100}
    primary_attacks: {partcrop: partcrop, lpla: lpla-p2}   # optional; defaults below
    headline_family: partcrop       # optional; default: the first family in ``attacks``
    utility: {data: rest, max_images: 1000}   # nonmembers, rest or a labelled data spec
    train: {epochs: 50, batch_size: 256, lr: 0.001, weight_decay: 1.0e-5,
            optimizer: adamw, amp: true}          # defaults of every paradigm
    paradigms:
      - {name: simclr, method: simclr, arch: resnet-tiny, arch_kwargs: {},
         method_kwargs: {temperature: 0.2}, crop_scale: [0.08, 1.0], epochs: 100}
    defences:
      - {kind: none}
      - {kind: early-stopping, epochs: [5, 20], paradigms: [simclr]}
      - {kind: dp, noise_multiplier: [0.5, 1.0], max_grad_norm: 1.0, delta: 1.0e-5}
      - {kind: scsr, crop_min: [0.5]}
    threads: 1                      # torch threads per cell (bitwise results need equal counts)
    device: auto
    ray: {address: null, workers: null, gpus_per_cell: 0}

Utility (k-NN and linear-probe accuracy, 50/50 split of the labelled images, seeded by the
cell's seed) is measured on ``utility.data``:

- ``nonmembers``: the cell's non-members (default);
- ``rest``: the labelled images of ``data`` that are in neither side of the cell's split
  (disjoint from both by content; duplicates dropped), so utility is measured on images the
  audit never uses; an error when nothing is left or the data has no labels;
- any other string: a labelled data spec loaded on its own (e.g. ``cifar10:DIR:test``).

``utility.max_images`` caps the set at a seeded random sample of that many images.

``knowledge.permutations`` label permutations test each attack's "no leakage" (p-value,
null band, fitting-aware AUC interval; 0 skips them; see
:mod:`leakprobe.evaluation.permutation`). All attacks of a cell share the permutations, so
the report can test the *maximum* over attacks against its own permutation null.

Leakage is measured by pre-declared *primary* attacks, one per attack family present in
``attacks`` (:data:`ATTACK_FAMILIES`): ``primary_attacks`` maps a family to one of its
attacks in the study (default :data:`DEFAULT_PRIMARY`, or the family's first attack in the
study when the default is not run), and ``headline_family`` names the family whose primary
ranks the paradigms. Picking the best of 8-9 attacks after the fact is biased upwards (with
64 + 64 samples the maximum is about 0.6 under no leakage); the report shows that maximum
only with its permutation p-value (best-of-many).

Defences (each value of the listed strength is one setting of the grid):

- ``none``: the paradigm as configured.
- ``early-stopping`` (``epochs``): the encoder after ``e`` epochs of the paradigm's *full*
  schedule (learning-rate schedule of the full run), i.e. training stopped early; taken as a
  snapshot of the paradigm's undefended run, so it costs no extra training.
- ``dp`` (``noise_multiplier`` or ``target_epsilon``; ``max_grad_norm``, ``delta``,
  ``accountant``): DP-SGD training; the cell reports the epsilon spent. ``dp-epsilon`` (the
  ``defend encoder`` spelling) is ``dp`` with ``target_epsilon``.
- ``scsr`` (``crop_min``, ``crop_max`` = 1.0): the shrinking crop-scale range defence of the
  PartCrop paper, training crops drawn from ``(crop_min, crop_max)`` of the image area.

A defence may also carry ``train`` (overrides of the training settings, e.g. a larger batch
for DP) and ``arch_kwargs`` (e.g. ``{norm: group}``), and ``paradigms`` (names it applies to;
default all).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leakprobe.attacks.registry import FAMILIES, expand_attacks
from leakprobe.defences.kinds import DEFENCE_ALIASES, DEFENCE_KINDS
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.permutation import DEFAULT_PERMUTATIONS
from leakprobe.precision import AMP_CHOICES

KNOWLEDGE_SETTINGS = ("known-subset",)
OPTIMIZERS = ("adamw", "sgd")
# The options a study may set for its attacks: the encoder family's (leakprobe.attacks.registry)
ATTACK_OPTION_KEYS = FAMILIES["encoder"].options
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "amp")

# Attack families: the attacks that are variants of one method (order: the table's).
ATTACK_FAMILIES: dict[str, tuple[str, ...]] = {
    "partcrop": ("partcrop", "partcrop-cosine", "partcrop-pooled"),
    "encodermi": ("encodermi-vector", "encodermi-set", "encodermi-threshold"),
    "lpla": ("lpla-p1", "lpla-p2", "lpla-pinf"),
    "baseline": ("baseline-norm", "baseline-consistency"),
}
# Each family's pre-declared primary attack when the study runs it.
DEFAULT_PRIMARY: dict[str, str] = {
    "partcrop": "partcrop", "encodermi": "encodermi-vector", "lpla": "lpla-p2",
    "baseline": "baseline-consistency",
}


def attack_family(attack: str) -> str | None:
    """The family of ``attack`` (a key of :data:`ATTACK_FAMILIES`), None for others."""
    for family, members in ATTACK_FAMILIES.items():
        if attack in members:
            return family
    return None


def primary_attacks(attacks: tuple[str, ...] | list[str], given: Any = None,
                    where: str = "primary_attacks") -> dict[str, str]:
    """Each family present in ``attacks`` -> its primary attack, families in study order.

    Args:
        attacks: the study's concrete attack names.
        given: the YAML's ``primary_attacks`` mapping (family -> attack), or None.
        where: key path used in error messages.
    Returns:
        ``{family: attack}`` for every family with an attack in ``attacks``: the given
        attack, else :data:`DEFAULT_PRIMARY` when it is in ``attacks``, else the family's
        first attack in ``attacks``.
    Raises:
        LeakprobeError: an unknown family, an attack of another family, or an attack the
            study does not run.
    """
    given = _mapping(given, where)
    attacks = list(attacks)
    for family, attack in given.items():
        if family not in ATTACK_FAMILIES:
            raise LeakprobeError(f"{where}: unknown attack family {family!r}; known: "
                                 f"{', '.join(ATTACK_FAMILIES)}")
        attack = _str(attack, f"{where}.{family}")
        members = ATTACK_FAMILIES[family]
        if attack not in members:
            raise LeakprobeError(f"{where}.{family}: {attack!r} is not a {family} attack; "
                                 f"{family} attacks: {', '.join(members)}")
        if attack not in attacks:
            raise LeakprobeError(f"{where}.{family}: {attack!r} is not among the study's "
                                 f"attacks ({', '.join(attacks)})")
    out: dict[str, str] = {}
    for name in attacks:
        family = attack_family(name)
        if family is None or family in out:
            continue
        ran = [a for a in attacks if a in ATTACK_FAMILIES[family]]
        out[family] = given.get(family) or (DEFAULT_PRIMARY[family]
                                            if DEFAULT_PRIMARY[family] in ran else ran[0])
    return out


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one training run (see ``TrainConfig``)."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adamw"
    amp: str | bool = "auto"


@dataclass(frozen=True)
class Paradigm:
    """One SSL paradigm of the grid: method, backbone and its training settings."""

    name: str
    method: str
    arch: str = "resnet-tiny"
    arch_kwargs: dict = field(default_factory=dict)
    method_kwargs: dict = field(default_factory=dict)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    train: TrainSettings = field(default_factory=TrainSettings)


@dataclass(frozen=True)
class Defence:
    """One defence with the strengths to try.

    Attributes:
        kind: ``none``, ``early-stopping``, ``dp`` or ``scsr``.
        values: the strengths (epochs, noise multipliers / target epsilons, crop minima);
            ``(None,)`` for ``none``.
        strength: what ``values`` measure (``epochs``, ``noise_multiplier``,
            ``target_epsilon``, ``crop_min``; ``""`` for none).
        paradigms: names of the paradigms it applies to (empty: all).
        options: the kind's fixed options (``max_grad_norm``, ``delta``, ``accountant``,
            ``crop_max``).
        train: training overrides for the defended runs.
        arch_kwargs: backbone overrides for the defended runs.
    """

    kind: str
    values: tuple = (None,)
    strength: str = ""
    paradigms: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    arch_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Knowledge:
    """The auditor's knowledge: known-subset cross-fitting over ``folds``, ``repeats`` times.

    ``permutations``: label permutations of each attack's test of "no leakage" (0: none).
    """

    setting: str = "known-subset"
    folds: int = 2
    repeats: int = 1
    permutations: int = DEFAULT_PERMUTATIONS


@dataclass(frozen=True)
class RaySettings:
    """Where cells run: a Ray cluster at ``address`` or a local one with ``workers`` CPUs."""

    address: str | None = None
    workers: int | None = None
    gpus_per_cell: float = 0.0


@dataclass(frozen=True)
class StudyConfig:
    """A whole study (see the module docstring for the YAML form)."""

    name: str
    data: str
    paradigms: tuple[Paradigm, ...]
    defences: tuple[Defence, ...] = (Defence("none"),)
    seeds: tuple[int, ...] = (0,)
    data_seed: int = 0
    image_size: int = 32
    members: int = 128
    nonmembers: int = 128
    attacks: tuple[str, ...] = ("partcrop", "encodermi", "lpla", "baseline-norm")
    attack_options: dict = field(default_factory=dict)
    knowledge: Knowledge = field(default_factory=Knowledge)
    utility_data: str = "nonmembers"
    utility_max_images: int | None = None
    threads: int = 1
    device: str = "auto"
    out: str | None = None
    ray: RaySettings = field(default_factory=RaySettings)
    primary_attacks: dict = field(default_factory=dict)
    headline_family: str | None = None

    def primaries(self) -> dict[str, str]:
        """Family -> primary attack (:attr:`primary_attacks`, else the defaults)."""
        return dict(self.primary_attacks) or primary_attacks(self.attacks)

    def headline(self) -> tuple[str | None, str | None]:
        """``(family, attack)`` of the headline primary (None, None: no family in the study)."""
        primaries = self.primaries()
        family = self.headline_family if self.headline_family in primaries \
            else next(iter(primaries), None)
        return family, primaries.get(family) if family else None

    def to_dict(self) -> dict:
        """The config as plain JSON-ready values."""
        return asdict(self)

    def paradigm(self, name: str) -> Paradigm:
        """The paradigm called ``name``."""
        for p in self.paradigms:
            if p.name == name:
                return p
        raise LeakprobeError(f"no paradigm named {name!r}")


# -- validation helpers -------------------------------------------------------------------


def _check_keys(obj: Any, allowed: tuple[str, ...], where: str, required: tuple = ()) -> dict:
    if not isinstance(obj, dict):
        raise LeakprobeError(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise LeakprobeError(
            f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}"
        )
    for key in required:
        if key not in obj:
            raise LeakprobeError(f"{where}: missing required key {key!r}")
    return obj


def _int(value: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LeakprobeError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise LeakprobeError(f"{where}: must be >= {minimum}, got {value}")
    return int(value)


def _float(value: Any, where: str, low: float | None = None, high: float | None = None,
           open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LeakprobeError(f"{where}: expected a finite number, got {value!r}")
    v = float(value)
    if low is not None and (v < low or (open_low and v == low)):
        raise LeakprobeError(f"{where}: must be {'>' if open_low else '>='} {low}, got {value}")
    if high is not None and v > high:
        raise LeakprobeError(f"{where}: must be <= {high}, got {value}")
    return v


def _str(value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LeakprobeError(f"{where}: expected a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise LeakprobeError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        value = [value]
    if not value:
        raise LeakprobeError(f"{where}: must not be empty")
    return list(value)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LeakprobeError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _train(obj: Any, where: str, base: TrainSettings) -> TrainSettings:
    raw = _check_keys(_mapping(obj, where), TRAIN_KEYS, where)
    values = asdict(base)
    for key, value in raw.items():
        w = f"{where}.{key}"
        if key in ("epochs", "batch_size"):
            values[key] = _int(value, w, 1)
        elif key == "lr":
            values[key] = _float(value, w, 0.0, open_low=True)
        elif key == "weight_decay":
            values[key] = _float(value, w, 0.0)
        elif key == "optimizer":
            values[key] = _str(value, w, OPTIMIZERS)
        elif key == "amp":
            if not isinstance(value, bool) and value not in AMP_CHOICES:
                raise LeakprobeError(f"{w}: expected auto, on, off, true or false, got "
                                     f"{value!r}")
            values[key] = value
    return TrainSettings(**values)


def _crop_scale(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise LeakprobeError(f"{where}: expected [low, high], got {value!r}")
    lo = _float(value[0], where, 0.0, 1.0, open_low=True)
    hi = _float(value[1], where, 0.0, 1.0, open_low=True)
    if lo > hi:
        raise LeakprobeError(f"{where}: low must be <= high, got {value!r}")
    return lo, hi


_PARADIGM_KEYS = ("name", "method", "arch", "arch_kwargs", "method_kwargs", "crop_scale",
                  *TRAIN_KEYS)


def _paradigm(obj: Any, where: str, base: TrainSettings) -> Paradigm:
    from leakprobe.models import list_models
    from leakprobe.training.ssl.base import list_methods

    raw = _check_keys(obj, _PARADIGM_KEYS, where, required=("method",))
    method = _str(raw["method"], f"{where}.method")
    if method not in list_methods():
        raise LeakprobeError(f"{where}.method: unknown SSL method {method!r}; available: "
                             f"{', '.join(list_methods())}")
    arch = _str(raw.get("arch", "resnet-tiny"), f"{where}.arch")
    if arch not in list_models():
        raise LeakprobeError(f"{where}.arch: unknown architecture {arch!r}; available: "
                             f"{', '.join(list_models())}")
    name = _str(raw.get("name", method), f"{where}.name")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise LeakprobeError(f"{where}.name: use letters, digits, '-' and '_' only, got {name!r}")
    train = _train({k: raw[k] for k in TRAIN_KEYS if k in raw}, where, base)
    return Paradigm(
        name=name, method=method, arch=arch,
        arch_kwargs=_mapping(raw.get("arch_kwargs"), f"{where}.arch_kwargs"),
        method_kwargs=_mapping(raw.get("method_kwargs"), f"{where}.method_kwargs"),
        crop_scale=_crop_scale(raw.get("crop_scale", [0.08, 1.0]), f"{where}.crop_scale"),
        train=train,
    )


_DEFENCE_KEYS = {
    "none": (),
    "early-stopping": ("epochs",),
    "dp": ("noise_multiplier", "target_epsilon", "max_grad_norm", "delta", "accountant"),
    "scsr": ("crop_min", "crop_max"),
}


def _defence(obj: Any, where: str) -> Defence:
    if isinstance(obj, str):
        obj = {"kind": obj}
    if not isinstance(obj, dict):
        raise LeakprobeError(f"{where}: expected a mapping with 'kind', got {obj!r}")
    raw = obj
    spelled = _str(raw.get("kind"), f"{where}.kind", (*DEFENCE_KINDS, *DEFENCE_ALIASES))
    kind, implied = DEFENCE_ALIASES.get(spelled, (spelled, ""))  # dp-epsilon: dp by epsilon
    common = ("kind", "paradigms", "train", "arch_kwargs")
    raw = _check_keys(raw, (*common, *_DEFENCE_KEYS[kind]), where)
    paradigms = tuple(_str(p, f"{where}.paradigms") for p in
                      _list(raw.get("paradigms", []) or ["*"], f"{where}.paradigms"))
    paradigms = () if paradigms == ("*",) else paradigms
    train = _check_keys(_mapping(raw.get("train"), f"{where}.train"), TRAIN_KEYS,
                        f"{where}.train")
    _train(train, f"{where}.train", TrainSettings())  # validate values
    arch_kwargs = _mapping(raw.get("arch_kwargs"), f"{where}.arch_kwargs")
    options: dict = {}
    values: tuple[float | None, ...]
    if kind == "none":
        values, strength = (None,), ""
    elif kind == "early-stopping":
        if "epochs" not in raw:
            raise LeakprobeError(f"{where}: early-stopping needs 'epochs' (a list of epochs)")
        values = tuple(sorted({_int(v, f"{where}.epochs", 1)
                               for v in _list(raw["epochs"], f"{where}.epochs")}))
        strength = "epochs"
    elif kind == "dp":
        if implied and implied not in raw:
            raise LeakprobeError(f"{where}: {spelled} needs '{implied}' (a list of strengths)")
        has_noise, has_eps = "noise_multiplier" in raw, "target_epsilon" in raw
        if has_noise == has_eps:
            raise LeakprobeError(f"{where}: dp needs exactly one of 'noise_multiplier' or "
                                 "'target_epsilon' (a list of strengths)")
        strength = "noise_multiplier" if has_noise else "target_epsilon"
        positive = strength == "target_epsilon"  # a noise multiplier of 0 is allowed
        values = tuple(_float(v, f"{where}.{strength}", 0.0, open_low=positive)
                       for v in _list(raw[strength], f"{where}.{strength}"))
        options = {
            "max_grad_norm": _float(raw.get("max_grad_norm", 1.0), f"{where}.max_grad_norm",
                                    0.0, open_low=True),
            "delta": _float(raw.get("delta", 1e-5), f"{where}.delta", 0.0, 1.0, open_low=True),
            "accountant": _str(raw.get("accountant", "rdp"), f"{where}.accountant",
                               ("rdp", "prv")),
        }
    else:  # scsr
        if "crop_min" not in raw:
            raise LeakprobeError(f"{where}: scsr needs 'crop_min' (a list of lower crop scales)")
        crop_max = _float(raw.get("crop_max", 1.0), f"{where}.crop_max", 0.0, 1.0, open_low=True)
        values = tuple(_float(v, f"{where}.crop_min", 0.0, crop_max, open_low=True)
                       for v in _list(raw["crop_min"], f"{where}.crop_min"))
        strength, options = "crop_min", {"crop_max": crop_max}
    if len(set(values)) != len(values):
        raise LeakprobeError(f"{where}.{strength}: repeated values {list(values)}")
    return Defence(kind, values, strength, paradigms, options, train, arch_kwargs)


def _views(value: Any) -> None:
    """Validate ``attack_options.views`` (a preset / ``PRESET,KEY=VALUE`` text or a mapping).

    The value is kept as written (it is part of the cells' keys); the attacks resolve it.
    """
    from leakprobe.views import parse_views

    if not isinstance(value, (str, dict)):
        raise LeakprobeError(f"attack_options.views: expected a preset name, KEY=VALUE text or "
                             f"a mapping, got {value!r}")
    try:
        parse_views(value)
    except LeakprobeError as e:
        raise LeakprobeError(f"attack_options.{e}") from e


_TOP_KEYS = ("name", "out", "data", "data_seed", "image_size", "members", "nonmembers", "seeds",
             "attacks", "attack_options", "knowledge", "utility", "train", "paradigms",
             "defences", "threads", "device", "ray", "primary_attacks", "headline_family")


def parse_study_config(raw: Any, source: str = "study config") -> StudyConfig:
    """Validate a parsed YAML mapping and return the typed :class:`StudyConfig`.

    Args:
        raw: the mapping (as ``yaml.safe_load`` returns it).
        source: name used in error messages.
    Raises:
        LeakprobeError: on unknown keys, missing keys or bad values (one line, key path).
    """
    raw = _check_keys(raw, _TOP_KEYS, source, required=("data", "paradigms"))
    base = _train(raw.get("train"), "train", TrainSettings())
    paradigms = tuple(_paradigm(p, f"paradigms[{i}]", base)
                      for i, p in enumerate(_list(raw["paradigms"], "paradigms")))
    names = [p.name for p in paradigms]
    if len(set(names)) != len(names):
        raise LeakprobeError(f"paradigms: names must be unique, got {names} (set 'name')")
    defences = tuple(_defence(d, f"defences[{i}]")
                     for i, d in enumerate(_list(raw.get("defences", ["none"]), "defences")))
    for i, d in enumerate(defences):
        for p in d.paradigms:
            if p not in names:
                raise LeakprobeError(f"defences[{i}].paradigms: no paradigm named {p!r}; "
                                     f"known: {', '.join(names)}")
        for paradigm in paradigms:
            if d.kind == "early-stopping" and (not d.paradigms or paradigm.name in d.paradigms):
                late = [e for e in d.values if e >= paradigm.train.epochs]
                if late:
                    raise LeakprobeError(
                        f"defences[{i}].epochs: {late[0]} is not before the end of paradigm "
                        f"{paradigm.name!r} ({paradigm.train.epochs} epochs)")
    kinds = [(d.kind, d.paradigms) for d in defences]
    if len(set(kinds)) != len(kinds):
        raise LeakprobeError("defences: a kind is listed twice for the same paradigms; merge "
                             "its values into one entry")
    seeds = tuple(_int(s, "seeds", 0) for s in _list(raw.get("seeds", [0]), "seeds"))
    if len(set(seeds)) != len(seeds):
        raise LeakprobeError(f"seeds: repeated values {list(seeds)}")
    attacks = tuple(expand_attacks(
        [_str(a, "attacks") for a in _list(raw.get("attacks", list(StudyConfig.attacks)),
                                           "attacks")], family="encoder"))
    options = _check_keys(_mapping(raw.get("attack_options"), "attack_options"),
                          ATTACK_OPTION_KEYS, "attack_options")
    for k, v in options.items():
        if k == "views":
            _views(v)
        else:
            _int(v, f"attack_options.{k}", 1)
    kn = _check_keys(_mapping(raw.get("knowledge"), "knowledge"),
                     ("setting", "folds", "repeats", "permutations"), "knowledge")
    knowledge = Knowledge(_str(kn.get("setting", "known-subset"), "knowledge.setting",
                               KNOWLEDGE_SETTINGS),
                          _int(kn.get("folds", 2), "knowledge.folds", 2),
                          _int(kn.get("repeats", 1), "knowledge.repeats", 1),
                          _int(kn.get("permutations", DEFAULT_PERMUTATIONS),
                               "knowledge.permutations", 0))
    primaries = primary_attacks(attacks, raw.get("primary_attacks"))
    headline = raw.get("headline_family")
    if headline is None:
        headline = next(iter(primaries), None)
    else:
        headline = _str(headline, "headline_family", tuple(ATTACK_FAMILIES))
        if headline not in primaries:
            raise LeakprobeError(f"headline_family: the study runs no {headline} attack; "
                                 f"families in the study: {', '.join(primaries) or 'none'}")
    util = _check_keys(_mapping(raw.get("utility"), "utility"), ("data", "max_images"),
                       "utility")
    max_images = util.get("max_images")
    max_images = None if max_images is None else _int(max_images, "utility.max_images", 2)
    ray = _check_keys(_mapping(raw.get("ray"), "ray"), ("address", "workers", "gpus_per_cell"),
                      "ray")
    members = _int(raw.get("members", 128), "members", 20)
    nonmembers = _int(raw.get("nonmembers", members), "nonmembers", 20)
    out = raw.get("out")
    return StudyConfig(
        name=_str(raw.get("name", "study"), "name"),
        data=_str(raw["data"], "data"),
        paradigms=paradigms,
        defences=defences,
        seeds=seeds,
        data_seed=_int(raw.get("data_seed", 0), "data_seed", 0),
        image_size=_int(raw.get("image_size", 32), "image_size", 8),
        members=members,
        nonmembers=nonmembers,
        attacks=attacks,
        attack_options=options,
        knowledge=knowledge,
        utility_data=_str(util.get("data", "nonmembers"), "utility.data"),
        utility_max_images=max_images,
        threads=_int(raw.get("threads", 1), "threads", 1),
        device=_str(raw.get("device", "auto"), "device"),
        out=None if out is None else _str(str(out), "out"),
        ray=RaySettings(
            address=None if ray.get("address") is None else _str(ray["address"], "ray.address"),
            workers=None if ray.get("workers") is None else _int(ray["workers"], "ray.workers", 1),
            gpus_per_cell=_float(ray.get("gpus_per_cell", 0.0), "ray.gpus_per_cell", 0.0),
        ),
        primary_attacks=primaries,
        headline_family=headline,
    )


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file.

    Args:
        path: the YAML file.
    Returns:
        The :class:`StudyConfig`.
    Raises:
        LeakprobeError: unreadable file, invalid YAML, or an invalid config.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise LeakprobeError(f"{path}: no such study config file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LeakprobeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return parse_study_config(raw, str(path))
