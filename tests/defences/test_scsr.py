"""SCSR: the training augmentation really draws crops from the narrowed area range."""

import pytest
import torch

import leakprobe.augment as augment
from leakprobe.data.synthetic import make_synthetic
from leakprobe.defences.scsr import DEFAULT_LOWER_BOUNDS, scsr_recipe
from leakprobe.errors import LeakprobeError
from leakprobe.training.encoder import EncoderRecipe, build_ssl_method, train_ssl_encoder
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.defend import plan_settings


def _crop_areas(recipe, monkeypatch) -> torch.Tensor:
    """Train briefly and return the area fraction of every crop the augmentation drew."""
    boxes = []
    original = augment.crops_from_boxes

    def recording(images, size, b):
        boxes.append(b.detach().reshape(-1, 4).clone())
        return original(images, size, b)

    monkeypatch.setattr(augment, "crops_from_boxes", recording)
    images = make_synthetic(32, 16, 0).images
    train_ssl_encoder(images, recipe, TrainConfig(epochs=1, batch_size=16, device="cpu"))
    b = torch.cat(boxes)
    return b[:, 2].abs() * b[:, 3]  # half-widths in [-1, 1] units = fractions of the side


def test_training_crops_lie_in_the_narrowed_range(monkeypatch):
    base = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0), {"proj_dim": 16})
    wide = _crop_areas(base, monkeypatch)
    narrow = _crop_areas(scsr_recipe(base, 0.5), monkeypatch)
    assert len(narrow) == 2 * 32  # 1 epoch x 2 views x 32 images
    assert float(narrow.min()) >= 0.5 - 1e-6 and float(narrow.max()) <= 1.0 + 1e-6
    assert float(wide.min()) < 0.2 and (wide < 0.5).float().mean() > 0.3
    assert float(narrow.mean()) > float(wide.mean()) + 0.15


def test_scsr_recipe_and_settings():
    base = EncoderRecipe(crop_scale=(0.08, 1.0))
    assert scsr_recipe(base, 0.3).crop_scale == (0.3, 1.0)
    assert base.crop_scale == (0.08, 1.0)  # the base recipe is not modified
    assert build_ssl_method(scsr_recipe(base, 0.5), 16).augmentation.crop_scale == (0.5, 1.0)
    settings = plan_settings("scsr", DEFAULT_LOWER_BOUNDS, base, TrainConfig(epochs=1))
    assert [s.name for s in settings] == ["scsr_0.08", "scsr_0.3", "scsr_0.5"]
    assert [s.recipe.crop_scale for s in settings] == [(0.08, 1.0), (0.3, 1.0), (0.5, 1.0)]
    for bad in (0.0, 1.5, -0.1, None):
        with pytest.raises(LeakprobeError, match="crop scale"):
            scsr_recipe(base, bad)
    with pytest.raises(LeakprobeError, match="repeat"):
        plan_settings("scsr", [0.3, 0.3], base, TrainConfig(epochs=1))
