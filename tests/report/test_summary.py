"""Every report leads with a computed one-sentence verdict (its ``summary`` key).

Membership: the sentence must follow the report's own tests (corrected for the number of
attacks), say when the blind floor makes the attacks' results no evidence, and state the
computed detectable AUC when nothing is shown; it must say "No leakage shown" for (nearly)
every audit of a model that did not leak.
"""

from __future__ import annotations

import numpy as np
import pytest
from demo_like import ENCODER_ATTACKS, encoder_report, membership_report

from leakprobe.evaluation.permutation import null_aucs_of_fixed_scores, permuted_labels
from leakprobe.evaluation.power import detectable_auc
from leakprobe.report.html import report_summary
from leakprobe.report.schema import AttackResult, build_report
from leakprobe.report.summary import membership_summary, membership_verdict

NAMES = ("partcrop", "encodermi-vector", "lpla-p1", "lpla-p2")


def _report(shifts: dict[str, float], *, blind: float | None = 0.0, n: int = 64,
            seed: int = 0, permutations: int = 0, fitted: tuple[str, ...] = (),
            n_bootstrap: int = 20) -> dict:
    """Gaussian scores shifted by ``shifts[name]`` sds for members; fixed-score attacks get a
    Mann-Whitney p-value, ``fitted`` ones the permutation p-value (when permutations ran)."""
    rng = np.random.default_rng(seed)
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    labels = permuted_labels(member, permutations, seed)
    attacks = dict(shifts, **({"blind": blind} if blind is not None else {}))
    results = []
    for name, shift in attacks.items():
        scores = rng.normal(size=2 * n) + shift * member
        null = null_aucs_of_fixed_scores(scores, labels) if permutations else None
        results.append(AttackResult(
            attack=name, params={}, scores=scores, is_member=member,
            ids=[str(i) for i in range(2 * n)], folds=None, queries=2 * n, seconds=0.1,
            null_aucs=null, refitted=name in fitted))
    return build_report("encoder-membership", "known-subset", seed, results,
                        n_bootstrap=n_bootstrap)


def test_a_memorising_model_is_leakage_detected() -> None:
    rep = _report({"partcrop": 2.0, "encodermi-vector": 1.5, "lpla-p1": 0.0, "lpla-p2": 0.0})
    verdict = membership_verdict(rep)
    assert verdict.outcome == "leakage" and verdict.correction == "holm"
    assert verdict.detected == ["partcrop", "encodermi-vector"]
    assert rep["summary"] == verdict.sentence
    assert rep["summary"].startswith(
        "Leakage detected: 2 of 4 attacks tell members from non-members, allowing for 4 "
        "tries (strongest: partcrop, AUC 0.9")
    assert ("the model-free floor does not beat chance (AUC "
            f"{rep['results'][-1]['metrics']['auc']:.2f}") in rep["summary"]


def test_a_model_that_did_not_leak_is_no_leakage_shown_with_the_computed_power() -> None:
    rep = _report(dict.fromkeys(NAMES, 0.0), n=300, seed=3)
    least = detectable_auc(n_members=300, n_nonmembers=300, alpha=0.05 / 4)
    smallest = min(r["metrics"]["p_value"] for r in rep["results"][:4])
    assert rep["summary"] == (
        f"No leakage shown at this sample size (smallest p = {smallest:.2f} over 4 attacks; "
        f"with 300 + 300 images an AUC below about {least:.2f} cannot be reliably told from "
        "chance)")
    assert 0.55 < least < 0.6


def test_a_blind_floor_above_chance_makes_the_attacks_no_evidence() -> None:
    rep = _report({"partcrop": 1.5, "encodermi-vector": 1.5}, blind=1.5)
    assert membership_verdict(rep).outcome == "split-differs"
    text = rep["summary"]
    assert text.startswith("Inconclusive: the member and non-member images can be told apart "
                           "without the model (model-free floor AUC 0.8")
    assert "2 of 2 beat chance" in text and text.endswith("are not evidence of leakage")
    assert "Leakage detected" not in text
    # with nothing found by the attacks, the floor is still reported
    quiet = _report({"partcrop": 0.0, "encodermi-vector": 0.0}, blind=1.5)
    assert quiet["summary"].startswith("No leakage shown")
    assert "also differ without the model (model-free floor AUC" in quiet["summary"]


def test_no_blind_floor_is_said() -> None:
    rep = _report({"partcrop": 2.0}, blind=None)
    assert rep["summary"].startswith("Leakage detected: the attack tells members from "
                                     "non-members (partcrop, AUC")
    assert rep["summary"].endswith("no model-free floor was run, so a difference between "
                                   "the two image sets is not ruled out")


def test_a_p_value_that_only_passes_uncorrected_is_not_leakage() -> None:
    # p ~ 0.02 for one of 4 attacks: below 0.05 alone, not after correcting for 4
    for seed in range(40):
        rep = _report(dict.fromkeys(NAMES, 0.0), seed=seed)
        ps = sorted(r["metrics"]["p_value"] for r in rep["results"][:4])
        if 0.0125 < ps[0] <= 0.05 and ps[1] > 0.05:
            break
    else:
        pytest.fail("no seed gave one p-value between 0.0125 and 0.05")
    assert rep["summary"].startswith(f"No leakage shown at this sample size (smallest p = "
                                     f"{ps[0]:.2f} over 4 attacks, not significant once "
                                     "corrected for 4 attacks;")


def test_fitted_attacks_without_p_values_are_judged_by_their_interval() -> None:
    rep = _report({"partcrop": 2.0, "lpla-p1": 0.0}, fitted=("partcrop", "lpla-p1"))
    assert all(r["metrics"]["p_value"] is None for r in rep["results"][:2])
    verdict = membership_verdict(rep)
    assert verdict.by_interval == ["partcrop", "lpla-p1"] and verdict.detected == ["partcrop"]
    assert "its interval excludes 0.5; no permutation test was run" in rep["summary"]
    null = _report({"partcrop": 0.0, "lpla-p1": 0.0}, fitted=("partcrop", "lpla-p1"))
    assert "no AUC interval excludes 0.5 (no permutation test was run)" in null["summary"]


def test_permutation_floors_use_the_shared_permutations_not_holm() -> None:
    """The demo's case: 7 fitted attacks at p = 1/101 = 0.0099, above Holm's 0.05/9; the
    step-down maxT over the shared permutations still finds them."""
    rep = encoder_report()
    verdict = membership_verdict(rep)
    ps = [r["metrics"]["p_value"] for r in rep["results"]]
    assert ps.count(pytest.approx(1 / 101)) >= 7
    assert verdict.correction == "westfall-young" and verdict.n_attacks == 9
    assert len(verdict.detected) == 9 and verdict.detected[0].startswith("encodermi")
    assert rep["summary"].startswith("Leakage detected: 9 of 9 attacks tell members from "
                                     "non-members, allowing for 9 tries (strongest: encodermi")
    # too few permutations to reach the level: said, and Holm on the p-values is used
    few = _report({"partcrop": 0.6}, permutations=9, fitted=("partcrop",))
    assert membership_verdict(few).correction == "holm"
    assert ("with only 9 permutations no p-value can go below 0.10, too coarse for this "
            "test: rerun with more permutations") in few["summary"]


def test_no_leakage_shown_in_nearly_every_null_audit() -> None:
    """Null validity: 100 seeded audits of 4 attacks and a blind floor on chance scores."""
    said = {"maxT": 0, "holm": 0}
    for seed in range(50):
        for way, permutations in (("maxT", 99), ("holm", 0)):
            rep = _report(dict.fromkeys(NAMES, 0.0), seed=seed, permutations=permutations,
                          n_bootstrap=5)
            said[way] += rep["summary"].startswith("No leakage shown")
    assert said["maxT"] >= 46 and said["holm"] >= 46, said  # family-wise 5%: ~47.5 of 50


def test_summary_of_a_report_without_the_key_is_computed() -> None:
    rep = membership_report("image2image-membership", {"reconstruction": (3.0, False, None)},
                            n=40)
    text = rep.pop("summary")
    assert report_summary(rep) == text == membership_summary(rep)
    assert list(ENCODER_ATTACKS)[-1] == "blind"


def test_a_report_of_the_blind_floor_alone_says_nothing_about_leakage() -> None:
    rep = _report({}, blind=0.0)
    assert membership_verdict(rep).outcome == "no-attacks"
    assert rep["summary"].startswith("No attack ran, so nothing is said about leakage; the "
                                     "model-free floor does not beat chance (AUC 0.")


def test_predictability_is_image_to_image_floor_not_an_attack() -> None:
    """Image-to-image audits run no ``blind``: their model-free ``predictability`` is the
    floor, so it is neither counted among the attacks nor called evidence of leakage."""
    rep = _report({"reconstruction": 3.0, "membership-error": 3.0, "predictability": 0.0},
                  blind=None)
    verdict = membership_verdict(rep)
    assert verdict.n_attacks == 2 and "predictability" not in verdict.detected
    assert rep["summary"].startswith("Leakage detected: 2 of 2 attacks"), rep["summary"]
    assert "the model-free floor does not beat chance" in rep["summary"]


def test_the_model_free_floors_are_the_registry_model_free_attacks() -> None:
    from leakprobe.attacks.registry import create_attack, entries
    from leakprobe.report.summary import MODEL_FREE_FLOORS

    model_free = {e.name for e in entries("image2image")
                  if create_attack(e.name, family="image2image").model_free}
    assert model_free == set(MODEL_FREE_FLOORS)
