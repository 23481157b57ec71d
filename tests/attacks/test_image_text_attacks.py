"""The image-text attacks on a stand-in CLIP whose answers are known exactly (no training):
features, scores, shared answers, exact query counts, the blind floor, the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leakprobe.attacks.membership.image_text import (
    ClipAugment,
    ClipCosine,
    ClipRank,
    ImageTextBlind,
    audit_query_count,
    caption_statistics,
    perturb_caption,
    share_answers,
)
from leakprobe.attacks.registry import create_attack, describe_attacks, expand_attacks
from leakprobe.data.images import ImageSet, concat
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.metrics import auc
from leakprobe.workflows.image_text_audit import audit_image_text, build_image_text_attacks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIM = 96


class StandIn:
    """A 'CLIP' that memorised its members exactly and knows nothing else.

    Image k is a flat grey of value (k + 1) / 255 and embeds to the basis vector e_k. A
    member's caption (``m imgK ...``) embeds to e_K; a non-member's (``n imgK ...``) to a mix of
    e_K and a direction no image has, so members' pairs have cosine 1 and non-members' 0.6.
    """

    input_size = 8

    def __init__(self) -> None:
        self.queries = 0
        self.image_calls = 0

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        self.queries += images.shape[0]
        self.image_calls += 1
        k = (images.mean(dim=(1, 2, 3)) * 255).round().long() - 1
        return torch.nn.functional.one_hot(k, DIM).float()

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self.queries += len(texts)
        out = torch.zeros(len(texts), DIM)
        for i, text in enumerate(texts):
            words = text.split()
            k = next((int(w[3:]) for w in words if w.startswith("img")), DIM - 2)
            out[i, k] = 1.0 if "m" in words else 0.6
            out[i, DIM - 1] = 0.0 if "m" in words else 0.8
        return out


def captioned(first: int, n: int, flag: str, captions: int = 3) -> ImageSet:
    images = torch.stack([torch.full((3, 8, 8), (k + 1) / 255) for k in range(first, first + n)])
    caps = [[f"{flag} img{k} a grey square number {j}" for j in range(captions)]
            for k in range(first, first + n)]
    return ImageSet(images, [f"img{k}" for k in range(first, first + n)],
                    extras={"captions": caps}, source="stand-in")


@pytest.fixture()
def sets():
    return captioned(0, 24, "m"), captioned(24, 24, "n")


def test_cosine_and_rank_tell_the_memorised_pairs(sets):
    members, nonmembers = sets
    both = concat([members, nonmembers])
    labels = np.r_[np.ones(24), np.zeros(24)].astype(bool)
    target = StandIn()
    attacks = [ClipCosine(), ClipRank()]
    share_answers(attacks)
    cos = attacks[0].features(target, both)
    assert cos.shape == (48, 1)
    assert np.allclose(cos[:24], 1.0) and np.allclose(cos[24:], 0.6)
    rank = attacks[1].features(target, both)
    assert rank.shape == (48, 2) and np.all(rank[:, 0] == 0)  # every true caption ranks first
    assert np.allclose(rank[:24, 1], 1.0) and np.allclose(rank[24:, 1], 0.6)  # the margins
    for a, f in zip(attacks, (cos, rank), strict=True):
        assert auc(a.score_features(f), labels) == 1.0
    # the clean answers were paid once: 48 images and 144 captions
    assert target.queries == 48 + 144 == audit_query_count(attacks, both)


def test_rank_counts_better_captions_and_population_distractors(sets):
    members, _ = sets
    target = StandIn()
    rank = ClipRank().prepare(captioned(0, 2, "m"))  # images 0 and 1's captions again...
    feats = rank.features(target, members)
    # ...tie with the true ones (ties do not rank above) but cost one query each
    assert np.all(feats[:, 0] == 0) and rank.extra_queries(target) == 6
    assert target.queries == 24 + 72 + 6 == audit_query_count([rank], members)
    assert rank.clone().distractors == rank.distractors
    lone = captioned(0, 1, "m")
    with pytest.raises(LeakprobeError, match="more than one image"):
        ClipRank().features(target, lone)


def test_augment_views_are_seeded_shared_and_counted(sets):
    members, nonmembers = sets
    both = concat([members, nonmembers])
    # no word dropped (the stand-in reads "m" and "imgK"), two words swapped half the time
    fitted = ClipAugment(n_views=4, word_drop=0.0)
    mean = ClipAugment(statistic="mean", n_views=4, word_drop=0.0)
    assert (fitted.name, mean.name) == ("clip-augment", "clip-augment-mean")
    assert fitted.needs_fit and not mean.needs_fit
    share_answers([fitted, mean])
    target = StandIn()
    feats = fitted.features(target, both)
    assert feats.shape == (48, 4) and np.all(np.diff(feats, axis=1) >= 0)  # sorted
    assert np.array_equal(mean.features(target, both), feats)  # the same answers...
    assert target.queries == 2 * 4 * 48 == audit_query_count([fitted, mean], both)  # ...once
    again = ClipAugment(n_views=4, word_drop=0.0).features(StandIn(), both)
    assert np.array_equal(again, feats)  # seeded
    labels = np.r_[np.ones(24), np.zeros(24)].astype(bool)
    assert auc(mean.score_features(feats), labels) == 1.0
    assert auc(fitted.clone().fit_features(feats, labels).score_features(feats), labels) == 1.0
    with pytest.raises(LeakprobeError, match="fitted or mean"):
        ClipAugment(statistic="median")


def test_caption_perturbations_are_seeded_and_keep_a_word():
    g = torch.Generator().manual_seed(0)
    texts = [perturb_caption("a large red circle at the top left", g, 0.5, 1.0)
             for _ in range(20)]
    g = torch.Generator().manual_seed(0)
    assert texts == [perturb_caption("a large red circle at the top left", g, 0.5, 1.0)
                     for _ in range(20)]
    assert all(t.split() for t in texts) and len(set(texts)) > 5
    assert perturb_caption("circle", torch.Generator(), 0.99, 1.0) == "circle"


def test_the_blind_floor_reads_images_and_captions_and_queries_nothing(sets):
    members, nonmembers = sets
    both = concat([members, nonmembers])
    blind = ImageTextBlind()
    assert blind.name == "blind" and blind.model_free and blind.sample_kind == "pairs"
    target = StandIn()
    feats = blind.features(target, both)
    stats = caption_statistics(both.extras["captions"])
    assert target.queries == 0 and feats.shape[1] > stats.shape[1] == 26
    assert np.array_equal(feats[:, -26:], stats)
    assert stats[0, 0] == 3 and stats[0, 1] == 7  # three captions of seven words
    # of the nine distinct words of an image's captions only "imgK" is its own
    assert np.allclose(stats[:, 9], 1 / 9)
    with pytest.raises(LeakprobeError, match="captioned images"):
        blind.features(target, ImageSet(both.images, both.ids))


def test_the_family_is_registered_with_its_blind_floor():
    rows = {r["name"]: r for r in describe_attacks()["image-text"]}
    assert list(rows) == ["clip-cosine", "clip-rank", "clip-augment", "clip-augment-mean",
                          "blind", "lira-clip-cosine", "rmia-clip-cosine",
                          "lira-clip-augment-mean", "rmia-clip-augment-mean"]
    assert "Ko et al., ICCV 2023" in rows["clip-cosine"]["summary"]
    assert expand_attacks("all", family="image-text") == list(rows)[:4]
    assert expand_attacks("calibrated", family="image-text") == list(rows)[5:]
    assert expand_attacks("lira", family="image-text") == [
        "lira-clip-cosine", "lira-clip-augment-mean"]
    assert isinstance(create_attack("blind", family="image-text"), ImageTextBlind)
    assert create_attack("clip-augment-mean", family="image-text").statistic == "mean"
    with pytest.raises(LeakprobeError, match="did you mean 'clip-rank'"):
        expand_attacks("clip-rnk", family="image-text")


def test_the_audit_builds_attacks_and_runs_encoder_attacks_on_the_image_tower(sets):
    names = [a.name for a in build_image_text_attacks("clip-cosine,encoder:partcrop-variants")]
    assert names == ["clip-cosine", "partcrop-pooled", "blind"]  # no tokens: pooled only
    with pytest.raises(LeakprobeError, match="exposes no tokens"):
        build_image_text_attacks("encoder:partcrop")
    with pytest.raises(LeakprobeError, match="unknown image-text attack option 'epochs'"):
        build_image_text_attacks("clip-cosine", epochs=3)
    members, nonmembers = sets
    target = StandIn()
    report = audit_image_text(target, members, nonmembers,
                              attacks="clip-cosine,encoder:baseline-norm", permutations=0)
    assert [r["attack"] for r in report["results"]] == ["clip-cosine", "baseline-norm", "blind"]
    assert report["kind"] == "image-text-membership"
    assert report["context"]["image_tower_attacks"] == ["baseline-norm"]
    assert report["context"]["total_queries"] == target.queries == 48 + 144 + 48
    cosine = report["results"][0]["metrics"]
    assert cosine["auc"] == 1.0 and cosine["p_value_method"].startswith("mann-whitney")


def test_audit_model_and_the_package_reach_the_image_text_audit(sets):
    import leakprobe
    from leakprobe.workflows.audit import audit_model

    assert leakprobe.audit_image_text is audit_image_text
    members, nonmembers = sets
    report = audit_model(StandIn(), members, nonmembers, family="image-text", permutations=0,
                         n_views=2)
    assert [r["attack"] for r in report["results"]] == [
        "clip-cosine", "clip-rank", "clip-augment", "blind"]
    assert report["context"]["clip_augment_views"]["clip-augment"]["crop_scale"] == [0.5, 1.0]
