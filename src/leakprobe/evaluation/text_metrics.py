"""Caption similarity metrics (pure Python + numpy): ROUGE-N/L, BLEU-1..4 and CIDEr-D.

These score a generated caption against reference captions; M4I (Hu et al., NeurIPS 2022)
uses them as membership features: a captioning model describes its training images closer to
their reference captions. :func:`caption_metric_features` is that feature vector.

Tokenisation (:func:`tokenize`): the lower-cased text split into runs of letters and digits
(``[^\\W_]+``); punctuation and whitespace separate words. For ASCII text this is the
``rouge-score`` package's default tokeniser (without stemming). pycocoevalcap instead runs the
Stanford PTB tokenizer (Java) first, which drops the same punctuation but keeps some word
pieces such as ``'s`` together; scores can differ slightly on text with apostrophes.

Definitions:

* ROUGE-N F (:func:`rouge_n_f`) and ROUGE-L F (:func:`rouge_l_f`) follow ``rouge-score``:
  clipped n-gram overlap (resp. the longest common subsequence) divided by the candidate's
  (precision) and the reference's (recall) n-gram count (resp. length), F1 =
  2PR/(P+R), 0 when there is no overlap or either side is empty. pycocoevalcap's ROUGE-L uses
  an F-measure with beta=1.2 instead; pass ``beta=1.2`` to :func:`rouge_l_f` for that.
* BLEU (:func:`bleu`) is pycocoevalcap's per-sentence BLEU (``BleuScorer``, option
  ``"closest"``): modified n-gram precision clipped by the maximum count over the references,
  BLEU-k the geometric mean of the first k precisions, each precision computed as
  ``(correct + 1e-15) / (guessed + 1e-9)`` (so a candidate without any k-gram match gets a
  tiny but non-zero score, as there), and the brevity penalty ``exp(1 - r/c)`` when the
  candidate length c is below the closest reference length r (ties: the shorter reference).
  The only difference is the tokeniser (above).
* CIDEr-D (:func:`cider_d`) is pycocoevalcap's ``Cider`` (which is CIDEr-D): tf-idf n-gram
  vectors (n = 1..4) with document frequencies over the reference sets of the whole corpus,
  cosine similarity with the candidate's weights clipped at the reference's, a Gaussian
  length penalty (sigma 6), averaged over n and over the references, times 10. Its quirks are
  kept on purpose: the "length" in the penalty is the number of *bigrams* (as in the
  reference code), and idf is ``log(N) - log(max(1, df))`` with N the number of images, so a
  corpus of one image scores 0 everywhere.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from leakprobe.data.text import words
from leakprobe.errors import LeakprobeError

METRIC_NAMES = ("rouge1", "rouge2", "rougeL", "bleu1", "bleu2", "bleu3", "bleu4")

_TINY = 1e-15  # pycocoevalcap BleuScorer's smoothing constants
_SMALL = 1e-9


tokenize = words  # the captioner's own tokenisation (leakprobe.data.text)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: float, n_cand: int, n_ref: int, beta: float = 1.0) -> float:
    if overlap <= 0 or n_cand == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_cand, overlap / n_ref
    b2 = beta * beta
    return (1 + b2) * p * r / (r + b2 * p)


# ---------------------------------------------------------------------------------------------
# ROUGE


def rouge_n_f(candidate: str, reference: str, n: int) -> float:
    """ROUGE-N F1 of ``candidate`` against one ``reference`` (as in ``rouge-score``).

    Args:
        candidate: generated caption.
        reference: one reference caption.
        n: n-gram order (>= 1).
    Returns:
        2PR/(P+R) with P, R the clipped n-gram overlap over the candidate's / reference's
        n-gram counts; 0.0 without overlap or when either side has no n-grams.
    """
    if n < 1:
        raise LeakprobeError(f"ROUGE-N needs n >= 1, got {n}")
    c, r = _ngrams(tokenize(candidate), n), _ngrams(tokenize(reference), n)
    overlap = sum((c & r).values())
    return _f1(overlap, sum(c.values()), sum(r.values()))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f(candidate: str, reference: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure via the longest common subsequence (LCS).

    Args:
        candidate: generated caption.
        reference: one reference caption.
        beta: recall weight; 1.0 (default) is the F1 of ``rouge-score``, 1.2 the F-measure
            of pycocoevalcap's ROUGE-L.
    Returns:
        (1+b^2)PR/(R+b^2 P) with P = LCS/len(candidate), R = LCS/len(reference); 0.0 without
        a common word or when either side is empty.
    """
    c, r = tokenize(candidate), tokenize(reference)
    return _f1(_lcs_length(c, r), len(c), len(r), beta)


# ---------------------------------------------------------------------------------------------
# BLEU


def bleu(candidate: str, references: Sequence[str], max_n: int = 4) -> list[float]:
    """Sentence-level BLEU-1..``max_n`` as pycocoevalcap computes it per sentence.

    Args:
        candidate: generated caption.
        references: one or more reference captions (clipping uses the maximum count of each
            n-gram over them; the brevity penalty the closest reference length).
        max_n: highest order.
    Returns:
        ``[BLEU-1, ..., BLEU-max_n]``; BLEU-k is the geometric mean of the first k modified
        precisions times the brevity penalty.
    """
    if isinstance(references, str) or len(references) == 0:
        raise LeakprobeError("BLEU needs a non-empty list of reference captions")
    if max_n < 1:
        raise LeakprobeError(f"BLEU needs max_n >= 1, got {max_n}")
    cand = tokenize(candidate)
    refs = [tokenize(r) for r in references]
    testlen = len(cand)
    # closest reference length; ties go to the shorter reference (pycocoevalcap "closest")
    reflen = min((abs(len(r) - testlen), len(r)) for r in refs)[1]
    scores = []
    product = 1.0
    for k in range(1, max_n + 1):
        max_ref: Counter = Counter()
        for r in refs:
            max_ref |= _ngrams(r, k)
        c = _ngrams(cand, k)
        correct = sum(min(cnt, max_ref[g]) for g, cnt in c.items())
        guess = max(0, testlen - k + 1)
        product *= (correct + _TINY) / (guess + _SMALL)
        scores.append(product ** (1.0 / k))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


# ---------------------------------------------------------------------------------------------
# CIDEr-D


def _cook(tokens: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        counts.update(_ngrams(tokens, k))
    return counts


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
) -> np.ndarray:
    """Corpus-level CIDEr-D (pycocoevalcap's ``Cider``): one score per candidate.

    Document frequencies come from the references of all ``len(candidates)`` images, so
    the score of one caption depends on the whole corpus it is scored with.

    Args:
        candidates: one generated caption per image.
        references: per image, a non-empty list of reference captions.
        n: highest n-gram order (4 in CIDEr-D).
        sigma: standard deviation of the Gaussian length penalty (6 in CIDEr-D).
    Returns:
        (N,) float64 scores (the corpus CIDEr-D is their mean).
    """
    if isinstance(candidates, str) or len(candidates) != len(references):
        raise LeakprobeError(
            f"CIDEr-D needs one candidate per reference set, got {len(candidates)} "
            f"candidates for {len(references)} reference sets"
        )
    if not candidates:
        return np.zeros(0)
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise LeakprobeError(f"CIDEr-D: image #{i} needs a non-empty list of references")
    ctest = [_cook(tokenize(c), n) for c in candidates]
    crefs = [[_cook(tokenize(r), n) for r in refs] for refs in references]
    df: defaultdict = defaultdict(float)
    for ref_counts in crefs:
        for gram in {g for ref in ref_counts for g in ref}:
            df[gram] += 1
    log_n = math.log(float(len(crefs)))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        v: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df.get(gram, 0.0))))
            v[k][gram] = w
            norm[k] += w * w
            if k == 1:  # pycocoevalcap counts bigrams as the "length"
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    penalty_den = 2 * sigma**2
    scores = np.zeros(len(candidates))
    for i, (test, ref_counts) in enumerate(zip(ctest, crefs, strict=True)):
        v_hyp, n_hyp, l_hyp = vec(test)
        total = np.zeros(n)
        for ref_count in ref_counts:
            v_ref, n_ref, l_ref = vec(ref_count)
            penalty = math.exp(-((l_hyp - l_ref) ** 2) / penalty_den)
            for k in range(n):
                val = sum(
                    min(w, v_ref[k].get(g, 0.0)) * v_ref[k].get(g, 0.0) for g, w in v_hyp[k].items()
                )
                if n_hyp[k] != 0 and n_ref[k] != 0:
                    val /= n_hyp[k] * n_ref[k]
                total[k] += val * penalty
        scores[i] = float(np.mean(total)) / len(ref_counts) * 10.0
    return scores


# ---------------------------------------------------------------------------------------------
# M4I features


def caption_metric_features(candidate: str, references: Sequence[str]) -> np.ndarray:
    """M4I's metric features of one generated caption against its reference captions.

    Each metric is computed against each reference separately and averaged over the
    references.

    Args:
        candidate: the caption the model generated for an image.
        references: that image's reference captions (non-empty).
    Returns:
        (7,) float64 in the order of :data:`METRIC_NAMES`: ROUGE-1 F, ROUGE-2 F, ROUGE-L F,
        BLEU-1, BLEU-2, BLEU-3, BLEU-4.
    """
    if isinstance(references, str) or len(references) == 0:
        raise LeakprobeError("caption metrics need a non-empty list of reference captions")
    rows = []
    for ref in references:
        rows.append(
            [
                rouge_n_f(candidate, ref, 1),
                rouge_n_f(candidate, ref, 2),
                rouge_l_f(candidate, ref),
                *bleu(candidate, [ref], 4),
            ]
        )
    return np.asarray(rows, dtype=np.float64).mean(axis=0)
