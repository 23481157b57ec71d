"""SCSR, shrinking the crop-scale range: train without part-sized random crops.

Membership attacks on SSL encoders such as PartCrop (Zhu et al., 2024) exploit that the
encoder saw many small random-resized crops of each training image during training, so the
embeddings of a member's parts align with the member's feature map. The SCSR defence raises
the lower bound of the random-resized-crop area range (default SSL range (0.08, 1.0); here
e.g. 0.3 or 0.5, upper bound 1.0), so part-sized crops are no longer training views.
Expected effect: PartCrop loses most of its signal; EncoderMI (which compares views of whole
images) is affected less; utility drops somewhat because small crops are a strong
augmentation.
"""

from __future__ import annotations

from dataclasses import replace

from leakprobe.errors import LeakprobeError
from leakprobe.training.encoder import EncoderRecipe

DEFAULT_LOWER_BOUNDS = (0.08, 0.3, 0.5)


def check_crop_scale(lower: float, upper: float = 1.0) -> tuple[float, float]:
    """``(lower, upper)`` as floats when ``0 < lower <= upper <= 1``.

    Raises:
        LeakprobeError: otherwise.
    """
    if lower is None or not 0 < float(lower) <= float(upper) <= 1:
        raise LeakprobeError(f"SCSR crop scale must satisfy 0 < lower <= upper <= 1, got "
                             f"({lower}, {upper})")
    return float(lower), float(upper)


def scsr_recipe(recipe: EncoderRecipe, lower: float, upper: float = 1.0) -> EncoderRecipe:
    """The recipe change: random-resized crops cover ``[lower, upper]`` of the image area."""
    return replace(recipe, crop_scale=check_crop_scale(lower, upper))
