"""The augmented views the attacks draw: named training recipes and a parser for ``--views``.

EncoderMI, LpLA and ``baseline-consistency`` embed augmented views of every image; members
answer more consistently when the views come from the distribution the encoder was trained
on. An outside attacker does not know that distribution and uses SimCLR's (the default: the
*black-box* setting). An owner auditing their own encoder knows its recipe and should say so
with ``--views``: matching the target's recipe is the *strong* setting.

Syntax of ``--views`` (and of a study's ``attack_options.views``)::

    PRESET[,KEY=VALUE...]      e.g.  byol    mae,flip=0    simclr,crop-scale=0.2:1,jitter=0.2
    {"preset": "dino", "crop_scale": [0.32, 1.0], ...}     (a JSON object; same keys)

A text without a preset (``crop-scale=0.5:1``) starts from ``simclr``. Keys (``-`` or ``_``):

- ``crop-scale=LO:HI``   random-resized-crop area range (fraction of the image, 0 < LO <= HI <= 1)
- ``crop-ratio=LO:HI``   crop aspect-ratio range
- ``flip=P``             horizontal-flip probability
- ``jitter=S`` or ``jitter=B:C:S:H``  colour-jitter strengths (one S: brightness = contrast
  = saturation = S, hue = S/4, SimCLR's proportions); ``jitter-p=P`` its probability;
  ``brightness``, ``contrast``, ``saturation``, ``hue`` one at a time
- ``gray=P``             grayscale probability
- ``blur=P``, ``blur-sigma=LO:HI``  Gaussian blur probability and sigma range, the sigma as a
  *fraction of the image side* (BYOL's 0.1-2 px at 224 px is ``0.00045:0.0089``)
- ``solarize=P``         solarisation probability
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError


@dataclass(frozen=True)
class ViewSpec:
    """One view distribution, independent of the image size.

    Attributes:
        crop_scale: random-resized-crop area range (fraction of the image).
        crop_ratio: random-resized-crop aspect-ratio range (log-uniform).
        flip_p: horizontal-flip probability.
        jitter_p: probability of colour jitter.
        brightness, contrast, saturation, hue: colour-jitter strengths (torchvision's).
        gray_p: grayscale probability.
        blur_p: Gaussian-blur probability.
        blur_sigma: blur sigma range as a fraction of the image side.
        solarize_p: solarisation probability.
        preset: the preset it was derived from (a label; not compared).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1 / 224, 2.0 / 224)
    solarize_p: float = 0.0
    preset: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError) as e:
                raise LeakprobeError(f"views: {_key(name)} must be two numbers LO:HI, "
                                     f"got {value!r}") from e
            object.__setattr__(self, name, (lo, hi))
            upper = 1.0 if name == "crop_scale" else math.inf
            if not (0 < lo <= hi <= upper) or not math.isfinite(hi):
                bound = " <= 1" if name == "crop_scale" else ""
                raise LeakprobeError(f"views: {_key(name)} must satisfy 0 < LO <= HI{bound}, "
                                     f"got {lo:g}:{hi:g}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            _check_number(self, name, 0.0, 1.0)
        for name in ("brightness", "contrast", "saturation"):
            _check_number(self, name, 0.0, math.inf)
        _check_number(self, "hue", 0.0, 0.5)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (ranges as lists), ``preset`` first."""
        values = asdict(self)
        preset = values.pop("preset")
        return {"preset": preset,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}

    def augmentation(self, size: int) -> SSLAugmentation:
        """The batched view generator of this spec at ``size`` pixels."""
        return SSLAugmentation(
            size=size, crop_scale=self.crop_scale, flip_p=self.flip_p, jitter_p=self.jitter_p,
            brightness=self.brightness, contrast=self.contrast, saturation=self.saturation,
            hue=self.hue, gray_p=self.gray_p, blur_p=self.blur_p,
            blur_sigma=(self.blur_sigma[0] * size, self.blur_sigma[1] * size),
            crop_ratio=self.crop_ratio, solarize_p=self.solarize_p,
        )


def _key(name: str) -> str:
    return name.replace("_", "-")


def _check_number(spec: ViewSpec, name: str, low: float, high: float) -> None:
    value = getattr(spec, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not low <= value <= high:
        bound = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise LeakprobeError(f"views: {_key(name)} must be a number {bound}, got {value!r}")
    object.__setattr__(spec, name, float(value))


def _simclr() -> ViewSpec:
    """SimCLR (Chen et al., 2020, appendix A): RandomResizedCrop(0.08-1, ratio 3/4-4/3),
    flip 0.5, colour jitter 0.8 x (0.4, 0.4, 0.4, 0.1) (strength 0.5, the CIFAR setting),
    grayscale 0.2; no blur (the paper drops it for CIFAR's small images). These are the views
    every attack drew before ``--views`` existed; the attacks' default."""
    return ViewSpec(preset="simclr")


def _byol() -> ViewSpec:
    """BYOL (Grill et al., 2020, table 6): SimCLR's crops and flip, jitter 0.8 x (0.4, 0.4,
    0.2, 0.1), grayscale 0.2, and two asymmetric views: blur p 1.0 / 0.1 (sigma 0.1-2 px at
    224 px, kept as that fraction of the side, so it is faint on 32-px images) and solarise
    p 0 / 0.2. Attack views come from one distribution, so the preset uses the mixture of the
    two: blur p 0.55, solarise p 0.1."""
    return ViewSpec(saturation=0.2, blur_p=0.55, solarize_p=0.1, preset="byol")


def _dino() -> ViewSpec:
    """DINO (Caron et al., 2021; ``main_dino.py``): the two *global* crops, RandomResizedCrop
    (0.4-1) (``--global_crops_scale``; 0.25-1 for its ViT-S/16 run, 0.32-1 in DINOv2), with
    BYOL's colour, blur and solarisation (mixture as in ``byol``). The small local crops are
    a training device only and are not drawn: attack views have the full input size."""
    return ViewSpec(crop_scale=(0.4, 1.0), saturation=0.2, blur_p=0.55, solarize_p=0.1,
                    preset="dino")


def _mae() -> ViewSpec:
    """MAE (He et al., 2022; ``main_pretrain.py``): RandomResizedCrop(0.2-1) and a flip only,
    no colour augmentation."""
    return ViewSpec(crop_scale=(0.2, 1.0), jitter_p=0.0, brightness=0.0, contrast=0.0,
                    saturation=0.0, hue=0.0, gray_p=0.0, preset="mae")


def _mild() -> ViewSpec:
    """Light augmentation (no paper): crops of 0.5-1 of the image, flip 0.5, weak jitter
    0.5 x (0.2, 0.2, 0.2, 0.05), no grayscale; for encoders trained with gentle views."""
    return ViewSpec(crop_scale=(0.5, 1.0), jitter_p=0.5, brightness=0.2, contrast=0.2,
                    saturation=0.2, hue=0.05, gray_p=0.0, preset="mild")


#: Named view recipes (``--views NAME``); each builder's docstring cites its source.
VIEW_PRESETS: dict[str, ViewSpec] = {
    "simclr": _simclr(), "byol": _byol(), "dino": _dino(), "mae": _mae(), "mild": _mild(),
}
DEFAULT_VIEWS = "simclr"

# accepted keys (after lower-casing and '-' -> '_') -> ViewSpec field; "jitter" is special
_ALIASES = {
    "crop_scale": "crop_scale", "scale": "crop_scale", "crop_ratio": "crop_ratio",
    "ratio": "crop_ratio", "flip": "flip_p", "flip_p": "flip_p", "jitter_p": "jitter_p",
    "brightness": "brightness", "contrast": "contrast", "saturation": "saturation",
    "hue": "hue", "gray": "gray_p", "grayscale": "gray_p", "gray_p": "gray_p",
    "blur": "blur_p", "blur_p": "blur_p", "blur_sigma": "blur_sigma",
    "solarize": "solarize_p", "solarize_p": "solarize_p", "jitter": "jitter",
}
_RANGES = ("crop_scale", "crop_ratio", "blur_sigma")
_KEYS_HELP = ("crop-scale, crop-ratio, flip, jitter, jitter-p, brightness, contrast, "
              "saturation, hue, gray, blur, blur-sigma, solarize")


def _number(text: Any, key: str) -> float:
    if isinstance(text, bool):
        raise LeakprobeError(f"views: {key} must be a number, got {text!r}")
    try:
        return float(text)
    except (TypeError, ValueError) as e:
        raise LeakprobeError(f"views: {key} must be a number, got {text!r}") from e


def _numbers(value: Any, key: str) -> list[float]:
    """``"0.2:1"``, ``[0.2, 1]`` or a single number -> list of floats."""
    if isinstance(value, str):
        parts = value.split(":")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    return [_number(p, key) for p in parts]


def _apply(values: dict[str, Any], raw_key: str, value: Any) -> None:
    key = str(raw_key).strip().lower().replace("-", "_")
    if key not in _ALIASES:
        import difflib

        close = difflib.get_close_matches(str(raw_key).strip().lower(),
                                          _KEYS_HELP.split(", "), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise LeakprobeError(f"views: unknown key {raw_key!r}; known: {_KEYS_HELP}{hint}")
    name = _ALIASES[key]
    label = _key(key)
    if name == "jitter":
        nums = _numbers(value, label)
        if len(nums) == 1:
            nums = [nums[0], nums[0], nums[0], nums[0] / 4]
        if len(nums) != 4:
            raise LeakprobeError(f"views: jitter must be S or B:C:S:H, got {value!r}")
        for field_name, v in zip(("brightness", "contrast", "saturation", "hue"), nums,
                                 strict=True):
            values[field_name] = v
    elif name in _RANGES:
        nums = _numbers(value, label)
        if len(nums) != 2:
            raise LeakprobeError(f"views: {label} must be LO:HI, got {value!r}")
        values[name] = tuple(nums)
    else:
        number = _number(value, label)
        if name.endswith("_p") and not 0 <= number <= 1:  # named as the user wrote it
            raise LeakprobeError(f"views: {str(raw_key).strip()} is a probability and must "
                                 f"be in [0, 1], got {value!r}")
        values[name] = number


def _preset(name: Any) -> ViewSpec:
    key = str(name).strip().lower()
    if key not in VIEW_PRESETS:
        raise LeakprobeError(f"views: unknown preset {name!r}; known: "
                             f"{', '.join(VIEW_PRESETS)} (or KEY=VALUE settings)")
    return VIEW_PRESETS[key]


def _build(base: ViewSpec, items: list[tuple[str, Any]], label: str) -> ViewSpec:
    values: dict[str, Any] = {}
    for key, value in items:
        _apply(values, key, value)
    if not values:
        return base
    return replace(base, **values, preset=label)


def parse_views(value: str | dict | ViewSpec | None) -> ViewSpec:
    """Resolve a ``--views`` value (see the module docstring) to a :class:`ViewSpec`.

    Args:
        value: a preset name, ``PRESET,KEY=VALUE,...``, a JSON object (as text or a dict)
            with an optional ``preset`` key and the same keys, a ViewSpec, or None (simclr).
    Raises:
        LeakprobeError: unknown preset or key, malformed or out-of-range value.
    """
    if value is None:
        return VIEW_PRESETS[DEFAULT_VIEWS]
    if isinstance(value, ViewSpec):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise LeakprobeError(f"views: not a valid JSON object: {value!r}") from e
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items() if k != "preset"]
        base_name = value.get("preset", DEFAULT_VIEWS)
        base = _preset(base_name)
        return _build(base, items, base.preset if not items else f"{base.preset}+custom")
    if not isinstance(value, str) or not value.strip():
        raise LeakprobeError(f"views: expected a preset name, KEY=VALUE settings or a JSON "
                             f"object, got {value!r}")
    parts = [p.strip() for p in value.split(",") if p.strip()]
    base = VIEW_PRESETS[DEFAULT_VIEWS]
    if parts and "=" not in parts[0]:
        base = _preset(parts.pop(0))
    items = []
    for part in parts:
        if "=" not in part:
            raise LeakprobeError(f"views: expected KEY=VALUE after the preset, got {part!r} "
                                 f"(a preset name comes first)")
        key, _, val = part.partition("=")
        items.append((key, val.strip()))
    return _build(base, items, base.preset if not items else f"{base.preset}+custom")


def attack_views(views: str | dict | ViewSpec | None,
                 crop_scale: tuple[float, float]) -> ViewSpec:
    """The views an attack draws: ``views`` if given, else SimCLR's with its ``crop_scale``.

    ``views=None`` keeps an attack's historical views exactly (the simclr preset with the
    attack's own ``crop_scale`` parameter); given views replace ``crop_scale`` too.
    """
    if views is None:
        base = VIEW_PRESETS[DEFAULT_VIEWS]
        values = tuple(float(v) for v in crop_scale)
        if len(values) != 2:  # the message ViewSpec gives
            raise LeakprobeError(f"views: {_key('crop_scale')} must be two numbers LO:HI, "
                                 f"got {values!r}")
        scale = (values[0], values[1])
        label = DEFAULT_VIEWS if scale == base.crop_scale else f"{DEFAULT_VIEWS}+custom"
        return replace(base, crop_scale=scale, preset=label)
    return parse_views(views)


__all__ = ["DEFAULT_VIEWS", "VIEW_PRESETS", "ViewSpec", "attack_views", "parse_views"]
