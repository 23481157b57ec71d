"""Shared fixtures: seeded small targets trained with the library's own code, cached."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("LEAKPROBE_PROGRESS", "0")
os.environ.setdefault("LEAKPROBE_QUIET", "1")
# Audits run 100 label permutations by default; tests that are not about the permutation
# test run 9 (the same code path, a tenth of the cost). Tests of the default pass it.
os.environ.setdefault("LEAKPROBE_PERMUTATIONS", "9")
torch.set_num_threads(min(2, os.cpu_count() or 1))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core: each computes on one thread, so the
    # workers do not fight over the cores
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads and lose a lot on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("leakprobe-cache")


MEMORISER_MEMBERS = 64


@pytest.fixture(scope="session")
def memorising_target(cache_dir):
    """A SimCLR resnet-tiny trained long on 64 synthetic images (no projection head).

    Returns the target and three disjoint sets: its members, 64 unseen images from the same
    distribution (non-members), and 64 more unseen images (for null audits, where the
    "members" were never trained on).
    """
    from leakprobe.data.splits import make_split
    from leakprobe.data.synthetic import make_synthetic
    from leakprobe.targets.encoder import ModuleEncoder
    from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
    from leakprobe.training.trainer import TrainConfig

    data = make_synthetic(4 * MEMORISER_MEMBERS, 32, seed=0)
    split = make_split(data, MEMORISER_MEMBERS, seed=0)
    recipe = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                           {"temperature": 0.2, "proj_dim": 0})
    config = TrainConfig(epochs=600, batch_size=64, lr=3e-3, amp="auto", seed=0, device="cpu")
    backbone, _ = train_ssl_encoder(split.members.images, recipe, config)
    rest = split.nonmembers
    half = len(rest) // 3
    return {
        "target": ModuleEncoder(backbone, device="cpu"),
        "members": split.members,
        "nonmembers": rest.subset(range(half)),
        "unseen_a": rest.subset(range(half, 2 * half)),
        "unseen_b": rest.subset(range(2 * half, 3 * half)),
    }


@pytest.fixture(scope="session")
def digits_target():
    """A SimCLR resnet-tiny trained briefly on scikit-learn digits (useful features).

    Returns the target and disjoint parts of digits: ``query`` (1000 images the attacker
    owns), ``probe_train`` (100 labelled) and ``probe_test`` (the remaining 697).
    """
    from leakprobe.data.loaders import load_digits_set
    from leakprobe.targets.encoder import ModuleEncoder
    from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
    from leakprobe.training.trainer import TrainConfig

    digits = load_digits_set(32)
    backbone, _ = train_ssl_encoder(
        digits.images, EncoderRecipe("simclr", "resnet-tiny"),
        TrainConfig(epochs=15, batch_size=256, lr=3e-3, amp="auto", seed=0, device="cpu"),
    )
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    return {
        "model": backbone,
        "target": ModuleEncoder(backbone, device="cpu"),
        "probe_train": digits.subset(order[:100]),
        "query": digits.subset(order[100:1100]),
        "probe_test": digits.subset(order[1100:]),
    }


@pytest.fixture(scope="session")
def memorising_captioner():
    """A CNN-LSTM captioner trained long on 60 synthetic captioned images, and an attacker.

    Returns the target, its members, 60 unseen non-members and 60 more unseen images (for
    null audits; the two unseen sets are a seeded random halving of 120 unseen images), the
    attacker's disjoint ``shadow_data`` (240 images), a shadow captioner trained like the
    target on the member half of ``audit_captioner``'s split of it (seed 0), and an
    ``m4i-feature`` attack prepared on ``shadow_data``.
    """
    from leakprobe.attacks.membership.m4i import M4IFeature
    from leakprobe.data.captions import Tokenizer, make_synthetic_captioned
    from leakprobe.data.splits import make_split
    from leakprobe.targets.captioner import ModuleCaptioner
    from leakprobe.training.captioning import train_captioner
    from leakprobe.training.trainer import TrainConfig

    def train(members):
        refs = members.extras["captions"]
        tok = Tokenizer.fit([c for cs in refs for c in cs])
        config = TrainConfig(epochs=300, batch_size=32, lr=2e-3, amp="auto", seed=0,
                             device="cpu")
        model, _ = train_captioner(members, tok, config)
        return ModuleCaptioner(model, tok, device="cpu")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: intra-op threads only add overhead
    try:
        data = make_synthetic_captioned(180, 32, seed=0)
        split = make_split(data, 60, seed=0)
        rest = split.nonmembers.subset(
            torch.randperm(120, generator=torch.Generator().manual_seed(1)))
        shadow_data = make_synthetic_captioned(240, 32, seed=5)
        shadow_split = make_split(shadow_data, 120, seed=0)
        return {
            "target": train(split.members),
            "members": split.members,
            "nonmembers": rest.subset(range(60)),
            "unseen": rest.subset(range(60, 120)),
            "shadow_data": shadow_data,
            "shadow_target": train(shadow_split.members),
            "feature_attack": M4IFeature(device="cpu").prepare(shadow_data),
        }
    finally:
        torch.set_num_threads(threads)
