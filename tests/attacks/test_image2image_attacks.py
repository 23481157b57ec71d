"""Image-to-image membership attacks on memorising, mixed-difficulty and null targets."""

from __future__ import annotations

import pytest
import torch

from leakprobe.data.images import ImageSet, concat
from leakprobe.data.splits import make_split
from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError
from leakprobe.targets.image2image import ModuleTranslator
from leakprobe.training.image2image import make_task_pairs, train_image2image
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.audit import audit_image2image, build_image2image_attacks

ATTACKS = "reconstruction,predictability,membership-error,membership-error-weighted"


def metrics_by_attack(report: dict) -> dict:
    return {r["attack"]: r["metrics"] for r in report["results"]}


def flat_images(n: int, size: int, seed: int) -> ImageSet:
    """Flat colours with a faint unique ramp: easy to denoise and to predict, all distinct."""
    g = torch.Generator().manual_seed(seed)
    colours = 0.2 + 0.6 * torch.rand(n, 3, 1, 1, generator=g)
    ramp = torch.linspace(-1, 1, size).view(1, 1, 1, size)
    slopes = torch.linspace(0.02, 0.15, n).view(n, 1, 1, 1)
    images = (colours + slopes * ramp).expand(n, 3, size, size).clamp(0, 1).contiguous()
    return ImageSet(images, [f"flat:{seed}:{i}" for i in range(n)], source="flat")


@pytest.fixture(scope="module")
def colorizer():
    """A U-Net trained long on 48 synthetic images (colourisation), plus unseen sets."""
    data = make_task_pairs(make_synthetic(192, 32, seed=4), "colorize")
    split = make_split(data, 48, seed=0)
    config = TrainConfig(epochs=150, batch_size=16, lr=2e-3, amp="auto", seed=0, device="cpu")
    model, _ = train_image2image(split.members, "colorize", "unet-small", config)
    rest = split.nonmembers
    return {"target": ModuleTranslator(model, device="cpu"), "members": split.members,
            "nonmembers": rest.subset(range(48)), "unseen_a": rest.subset(range(48, 96)),
            "unseen_b": rest.subset(range(96, 144))}


def test_membership_error_finds_memorised_members(colorizer):
    c = colorizer
    report = audit_image2image(c["target"], c["members"], c["nonmembers"], attacks=ATTACKS)
    m = metrics_by_attack(report)
    assert m["membership-error"]["auc"] >= 0.75, m["membership-error"]
    assert report["context"]["pixel_features"]["name"] == "builtin"


def test_null_target_gives_chance(colorizer):
    c = colorizer
    m = metrics_by_attack(audit_image2image(c["target"], c["unseen_a"], c["unseen_b"],
                                            attacks=ATTACKS))
    for name in ("reconstruction", "membership-error", "predictability"):
        lo, hi = m[name]["auc_ci"]
        assert lo <= 0.5 <= hi, (name, m[name])


def test_membership_error_holds_up_when_easy_and_hard_images_mix():
    hard = make_synthetic(96, 32, seed=8)
    easy = flat_images(96, 32, seed=9)
    # both sides mix easy (flat) and hard (textured) images alike: difficulty varies far more
    # than membership moves the error; the predictability term must remove, not add, noise
    members = concat([easy.subset(range(24)), hard.subset(range(24))])
    nonmembers = concat([easy.subset(range(24, 48)), hard.subset(range(24, 48))])
    # denoising: flat images are easy for the model and for the regression alike
    members = make_task_pairs(ImageSet(members.images, members.ids), "denoise", seed=0)
    nonmembers = make_task_pairs(ImageSet(nonmembers.images, nonmembers.ids), "denoise", seed=1)
    config = TrainConfig(epochs=40, batch_size=16, lr=2e-3, amp="auto", seed=0, device="cpu")
    model, _ = train_image2image(members, "denoise", "unet-small", config)
    m = metrics_by_attack(audit_image2image(ModuleTranslator(model, device="cpu"), members,
                                            nonmembers, attacks=ATTACKS))
    assert m["membership-error"]["auc"] >= m["reconstruction"]["auc"] - 0.02, m


def test_unknown_attack_and_missing_ground_truth_are_clear_errors(colorizer):
    with pytest.raises(LeakprobeError, match="membership-error"):
        build_image2image_attacks("nope")
    c = colorizer
    bare = ImageSet(c["members"].images, c["members"].ids)
    other = ImageSet(c["nonmembers"].images, c["nonmembers"].ids)
    with pytest.raises(LeakprobeError, match="ground-truth"):
        audit_image2image(c["target"], bare, other, attacks="reconstruction")
