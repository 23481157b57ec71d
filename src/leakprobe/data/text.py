"""Words of a caption: the one tokenisation shared by the captioner's vocabulary and the
caption metrics (ROUGE, BLEU, CIDEr-D in :mod:`leakprobe.evaluation.text_metrics`)."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``: runs of letters and digits (punctuation and spaces split)."""
    return _WORD.findall(str(text).lower())
