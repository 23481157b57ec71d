"""Caption metrics against hand-computed values (ROUGE, BLEU, CIDEr-D, M4I features)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.text_metrics import (
    METRIC_NAMES,
    bleu,
    caption_metric_features,
    cider_d,
    rouge_l_f,
    rouge_n_f,
    tokenize,
)

CAND = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_tokenize():
    assert tokenize("A Red-circle, at the TOP!") == ["a", "red", "circle", "at", "the", "top"]


def test_identical_caption_scores_one():
    text = "a large red circle at the top left"
    for n in (1, 2, 3):
        assert rouge_n_f(text, text, n) == pytest.approx(1.0)
    assert rouge_l_f(text, text) == pytest.approx(1.0)
    assert bleu(text, [text]) == pytest.approx([1.0] * 4)
    feats = caption_metric_features(text, [text, text.upper() + "."])
    assert feats.shape == (len(METRIC_NAMES),) == (7,)
    assert feats == pytest.approx(np.ones(7))


def test_rouge_worked_example():
    # unigrams: 5 of 6 shared; bigrams: the cat, on the, the mat = 3 of 5; LCS 5 of 6
    assert rouge_n_f(CAND, REF, 1) == pytest.approx(5 / 6)
    assert rouge_n_f(CAND, REF, 2) == pytest.approx(3 / 5)
    assert rouge_l_f(CAND, REF) == pytest.approx(5 / 6)
    # unequal lengths: "the cat" vs REF: P = 1, R = 2/6 -> F1 = 0.5
    assert rouge_n_f("the cat", REF, 1) == pytest.approx(0.5)
    # beta = 1.2 (pycocoevalcap's ROUGE-L): (1 + b^2) P R / (R + b^2 P)
    p, r, b2 = 1.0, 2 / 6, 1.44
    assert rouge_l_f("the cat", REF, beta=1.2) == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    assert rouge_n_f("dog", REF, 1) == 0.0 and rouge_l_f("", REF) == 0.0
    assert rouge_n_f("cat", REF, 2) == 0.0  # no bigram in the candidate


def test_bleu_brevity_penalty():
    # all unigrams match, c = 2, r = 6: BLEU-1 = exp(1 - 6/2)
    b1 = bleu("the cat", [REF])[0]
    assert b1 == pytest.approx(math.exp(-2), rel=1e-6)
    # the closest reference length is used: r = 2 here, so no penalty
    assert bleu("the cat", [REF, "the cat"])[0] == pytest.approx(1.0)
    # ties go to the shorter reference: c = 3, refs of length 2 and 4 -> r = 2, no penalty
    assert bleu("a b c", ["a b", "a b c d"])[0] == pytest.approx(1.0)


def test_bleu_clipping_and_higher_orders():
    # "the" counted at most once (its count in the reference): 1/4, no brevity penalty
    assert bleu("the the the the", ["the cat"])[0] == pytest.approx(0.25)
    # CAND vs REF: p1 = 5/6, p2 = 3/5, p3 = 1/4 (on the mat), p4 = 0/3
    b = bleu(CAND, [REF])
    assert b[0] == pytest.approx(5 / 6)
    assert b[1] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b[2] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert b[3] < 1e-3  # (p1 p2 p3 * 1e-15 / 3) ** 1/4: tiny, as pycocoevalcap
    # clipping by the maximum count over references
    assert bleu("the the cat", ["the cat", "the the dog"])[0] == pytest.approx(1.0)


def test_cider_d():
    refs = [
        ["a red circle at the top left", "a big red circle in the corner"],
        ["a blue square on the right", "there is a small blue square"],
        ["a green ring in the center", "one green ring in the middle"],
    ]
    good = cider_d(["a red circle at the top", "a small blue square", "a green ring"], refs)
    bad = cider_d(["a blue square", "a green ring in the middle", "a red circle"], refs)
    assert good.shape == (3,)
    assert np.all(good > bad)
    none = cider_d(["purple dog", "", "zebra runs fast"], refs)
    assert np.allclose(none, 0.0)
    # identical to a reference of a corpus image scores high (> 1)
    assert cider_d(["a red circle at the top left", "x", "y"], refs)[0] > 1.0
    assert cider_d([], []).shape == (0,)
    with pytest.raises(LeakprobeError):
        cider_d(["a"], refs)
    with pytest.raises(LeakprobeError):
        cider_d(["a"], [[]])


def test_caption_metric_features_average_over_references():
    refs = [REF, "the cat sat on the mat"]
    feats = caption_metric_features(CAND, refs)
    first = [
        rouge_n_f(CAND, REF, 1),
        rouge_n_f(CAND, REF, 2),
        rouge_l_f(CAND, REF),
        *bleu(CAND, [REF]),
    ]
    assert feats == pytest.approx((np.asarray(first) + 1.0) / 2)
    with pytest.raises(LeakprobeError):
        caption_metric_features(CAND, [])
