"""`audit_image_text` on a CLIP-style target the suite trains to memorise 64 image-caption
pairs: the attacks detect its members, find nothing on images it never saw, and everything
that can fail fails before the first query."""

from __future__ import annotations

import pytest
import torch

from leakprobe.data.captions import Tokenizer, make_synthetic_captioned
from leakprobe.data.splits import make_split
from leakprobe.errors import LeakprobeError
from leakprobe.targets.image_text import ModuleImageText
from leakprobe.training.image_text import train_image_text
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.image_text_audit import audit_image_text

# one worker trains the target once (module fixture); the other workers run other tests
pytestmark = [pytest.mark.xdist_group("memorising-image-text"),
              pytest.mark.usefixtures("one_torch_thread")]

MEMBERS = 64
ALPHA = 0.01


@pytest.fixture(scope="module")
def clip():
    """A resnet-tiny + one-layer text transformer CLIP trained 50 epochs on 64 synthetic
    captioned images (~15-30 s on one CPU thread), its members, 64 unseen non-members and
    two more sets of 64 unseen images (for the null audit)."""
    data = make_synthetic_captioned(4 * MEMBERS, 32, seed=0)
    split = make_split(data, MEMBERS, seed=0)
    members, rest = split.members, split.nonmembers
    tok = Tokenizer.fit([c for cs in members.extras["captions"] for c in cs])
    config = TrainConfig(epochs=50, batch_size=64, lr=3e-3, seed=0, device="cpu", amp="off")
    model, _ = train_image_text(members, tok, config)
    return {"model": model, "members": members,
            "nonmembers": rest.subset(range(MEMBERS)),
            "unseen_a": rest.subset(range(MEMBERS, 2 * MEMBERS)),
            "unseen_b": rest.subset(range(2 * MEMBERS, 3 * MEMBERS))}


def target_of(clip, **kwargs) -> ModuleImageText:
    return ModuleImageText(clip["model"], device="cpu", **kwargs)


def test_cosine_and_rank_detect_the_memorised_pairs(clip):
    target = target_of(clip)
    report = audit_image_text(target, clip["members"], clip["nonmembers"],
                              attacks="clip-cosine,clip-rank", permutations=99, seed=0,
                              context={"model": "memorising clip"})
    rows = {r["attack"]: r["metrics"] for r in report["results"]}
    assert list(rows) == ["clip-cosine", "clip-rank", "blind"]
    for name in ("clip-cosine", "clip-rank"):
        assert rows[name]["auc"] >= 0.9, (name, rows[name]["auc"])
        assert rows[name]["p_value"] <= ALPHA, (name, rows[name]["p_value"])
    assert report["summary"].startswith("Leakage detected")
    assert report["kind"] == "image-text-membership" and report["knowledge"] == "known-subset"
    ctx = report["context"]
    assert ctx["captions"]["members"] == 5 * MEMBERS and ctx["model"] == "memorising clip"
    # the clean answers are shared: each image and caption queried once
    assert ctx["total_queries"] == target.queries == 2 * MEMBERS * 6


def test_nothing_is_found_on_images_the_model_never_saw(clip):
    report = audit_image_text(target_of(clip), clip["unseen_a"], clip["unseen_b"],
                              permutations=99, seed=0)
    rows = {r["attack"]: r["metrics"] for r in report["results"]}
    assert list(rows) == ["clip-cosine", "clip-rank", "clip-augment", "blind"]
    attacks = [n for n in rows if n != "blind"]
    for name in attacks:  # family-wise: Bonferroni over the attacks
        assert rows[name]["p_value"] >= ALPHA / len(attacks), (name, rows[name])
    assert rows["blind"]["p_value"] >= ALPHA  # the two sets come from one distribution
    lo, hi = rows["blind"]["auc_ci"]
    assert lo <= 0.5 <= hi
    assert not report["summary"].startswith("Leakage detected")


def test_every_problem_is_refused_before_the_first_query(clip, tmp_path):
    target = target_of(clip, budget=500)
    members, nonmembers = clip["members"], clip["nonmembers"]
    out = tmp_path / "never"
    uncaptioned = members.subset(range(MEMBERS))
    uncaptioned.extras.pop("captions")
    one_empty = members.subset(range(MEMBERS))
    one_empty.extras["captions"] = [[], *one_empty.extras["captions"][1:]]
    cases = [
        ((uncaptioned, nonmembers), {}, "the members carry no captions"),
        ((members, one_empty), {}, "non-members: image .* has no caption"),
        ((members, members), {}, "members and non-members overlap"),
        ((members.subset(range(19)), nonmembers), {}, "at least 20 per side"),
        ((members, nonmembers), {}, "the target's budget allows 500"),
        ((members, nonmembers), {"attacks": "clip-cosine,clip-rnk"}, "did you mean"),
        ((members, nonmembers), {"knowledge": "shadow"}, "known-subset or reference"),
        ((members, nonmembers), {"knowledge": "reference"}, "needs reference image-text"),
        ((members, nonmembers), {"attacks": "lira-clip-cosine"}, "need --knowledge reference"),
        ((members, nonmembers), {"population": members}, "population data shares"),
    ]
    for (mem, non), options, message in cases:
        with pytest.raises(LeakprobeError, match=message) as info:
            audit_image_text(target, mem, non, out_dir=out, permutations=0, **options)
        assert "\n" not in str(info.value)
        assert target.queries == 0 and not out.exists(), message
    with pytest.raises(LeakprobeError, match="not an image-text model"):
        audit_image_text(torch.nn.Linear(2, 2), members, nonmembers, out_dir=out)


@pytest.fixture(scope="module")
def references(clip, tmp_path_factory):
    """Two reference CLIPs trained (the target's recipe, 30 epochs) on random halves of 128
    captioned images of the attacker's own (another seed of the same generator)."""
    from leakprobe.workflows.image_text_audit import image_text_references

    population = make_synthetic_captioned(2 * MEMBERS, 32, seed=1)
    return image_text_references(population, count=2, epochs=30, lr=3e-3,
                                 out_dir=tmp_path_factory.mktemp("refs"), seed=0,
                                 population_samples=64)


def test_calibrated_attacks_detect_the_memorised_pairs(clip, references):
    target = target_of(clip)
    report = audit_image_text(target, clip["members"], clip["nonmembers"],
                              knowledge="reference", references=references, permutations=99,
                              seed=0)
    rows = {r["attack"]: r["metrics"] for r in report["results"]}
    assert list(rows) == ["clip-cosine", "clip-rank", "clip-augment-mean", "lira-clip-cosine",
                          "rmia-clip-cosine", "lira-clip-augment-mean",
                          "rmia-clip-augment-mean", "blind"]
    assert rows["lira-clip-cosine"]["auc"] >= 0.9, rows["lira-clip-cosine"]
    for name in ("lira-clip-cosine", "rmia-clip-cosine", "lira-clip-augment-mean",
                 "rmia-clip-augment-mean"):
        assert rows[name]["p_value"] <= ALPHA, (name, rows[name])
    assert report["knowledge"] == "reference"
    ctx = report["context"]
    assert ctx["references"]["count"] == 2 and ctx["references"]["recipe"]["method"] == "clip"
    # audited pairs once (shared with the uncalibrated attacks), each statistic's 64
    # population pairs once (lira and rmia share them): the plan and the count are exact
    pairs = 2 * MEMBERS
    assert ctx["total_queries"] == target.queries == (
        pairs * 6 + pairs * 16 + 64 * 6 + 64 * 16)
    assert ctx["query_plan"]["total_queries"] == target.queries


def test_calibrated_attacks_find_nothing_on_images_the_model_never_saw(clip, references):
    report = audit_image_text(target_of(clip), clip["unseen_a"], clip["unseen_b"],
                              knowledge="reference", references=references, permutations=99,
                              seed=0, attacks="calibrated")
    rows = {r["attack"]: r["metrics"] for r in report["results"]}
    attacks = [n for n in rows if n != "blind"]
    assert len(attacks) == 4
    for name in attacks:  # family-wise: Bonferroni over the attacks
        assert rows[name]["p_value"] >= ALPHA / len(attacks), (name, rows[name])
    assert not report["summary"].startswith("Leakage detected")


def test_encoder_attacks_on_the_image_tower_calibrate_against_the_references_towers(
        clip, references):
    report = audit_image_text(target_of(clip), clip["members"], clip["nonmembers"],
                              knowledge="reference", references=references, permutations=0,
                              seed=0, attacks="lira-clip-cosine,encoder:lira-baseline-norm")
    names = [r["attack"] for r in report["results"]]
    assert names == ["lira-clip-cosine", "lira-baseline-norm", "blind"]
    notes = next(r["notes"] for r in report["results"] if r["attack"] == "lira-baseline-norm")
    assert any("2 reference encoders" in n for n in notes)


def test_reference_data_sharing_an_audited_image_is_refused_before_anything_trains(
        clip, tmp_path):
    from leakprobe.data.images import concat
    from leakprobe.workflows.image_text_audit import check_image_text_audit

    target = target_of(clip)
    leaky = concat([make_synthetic_captioned(30, 32, seed=1), clip["members"].subset([0])])
    with pytest.raises(LeakprobeError, match="reference data shares 1 images"):
        check_image_text_audit(target, clip["members"], clip["nonmembers"],
                               knowledge="reference", reference_data=leaky)
    with pytest.raises(LeakprobeError, match="clip-augment fit on known samples"):
        check_image_text_audit(target, clip["members"], clip["nonmembers"],
                               knowledge="reference", attacks="clip-augment",
                               reference_data=make_synthetic_captioned(30, 32, seed=1))
    budgeted = target_of(clip, budget=2 * MEMBERS * 22)  # the audited pairs, no population
    with pytest.raises(LeakprobeError, match="2992 queries.*population-sample queries"):
        check_image_text_audit(budgeted, clip["members"], clip["nonmembers"],
                               knowledge="reference", population_samples=8,
                               reference_data=make_synthetic_captioned(30, 32, seed=1))
    assert target.queries == 0 and budgeted.queries == 0
