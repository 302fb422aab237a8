"""Which words drove a prediction: cheap attributions an operator can read.

- TF-IDF (the baseline, and the TF-IDF part a transformer is mixed with): a linear model's score
  for a class is the sum of feature value x weight, so each n-gram's contribution is exact. Word
  n-grams are shown as they are; character n-grams are folded into the words that contain them.
- Any model (the transformer): leave-one-word-out: how much the class probability drops when a
  word (or, in long texts, a span of words) is removed. One batch of extra predictions.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .classifier import ComplaintClassifier
from .text import normalize_text
from .tfidf import TfidfHeads

NGRAMS = "tfidf_ngrams"
LEAVE_ONE_OUT = "leave_one_word_out"
TOP_N = 8
MAX_SPANS = 48  # leave-one-out predictions per text, at most
_WORD_EDGES = re.compile(r"^\W+|\W+$")


@dataclass(frozen=True)
class Explanation:
    """The terms that moved `head`'s score for `label`, largest contribution first. For
    `tfidf_ngrams` a contribution is in logit units (temperature applied); for
    `leave_one_word_out` it is the drop in probability when the term is removed."""

    head: str
    label: str
    method: str
    terms: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "label": self.label,
            "method": self.method,
            "terms": [{"term": t, "weight": round(w, 4)} for t, w in self.terms],
        }


def tfidf_part(classifier: ComplaintClassifier) -> TfidfHeads | None:
    """The TF-IDF heads of a model: the whole baseline, or the part a transformer mixes in."""
    backend: Any = classifier.backend
    inner = getattr(backend, "tfidf", None)  # TfidfBackend.tfidf, TransformerBackend.tfidf
    if isinstance(inner, TfidfHeads):
        return inner
    return getattr(inner, "tfidf", None) if inner is not None else None


def _best_label(classifier: ComplaintClassifier, text: str, head: str) -> str:
    return classifier.predict([text], top_k=1)[0].best(head).label


def ngram_contributions(
    classifier: ComplaintClassifier,
    text: str,
    head: str = "agency",
    label: str | None = None,
    top_n: int = TOP_N,
) -> Explanation | None:
    """The n-grams with the largest contributions to the TF-IDF score of `label` (default: the
    predicted one); None when the model has no TF-IDF part or never saw the label."""
    tfidf = tfidf_part(classifier)
    if tfidf is None:
        return None
    label = label or _best_label(classifier, text, head)
    linear = tfidf.heads[head]
    if label not in linear.classes:
        return None
    row = _coef_row(linear.coef, linear.classes.index(label))
    temperature = classifier.temperatures.get(head, 1.0)
    cleaned = normalize_text(text)
    scores: defaultdict[str, float] = defaultdict(float)
    offset = 0
    for vectorizer in tfidf.vectorizers.values():
        features = vectorizer.transform([cleaned]).tocoo()
        names = _names(vectorizer)
        contributions = {
            names[j]: float(x * row[offset + j]) / temperature
            for j, x in zip(features.col, features.data, strict=True)
        }
        if vectorizer.analyzer == "char_wb":
            _fold_into_words(contributions, vectorizer, cleaned, scores)
        else:
            for term, value in contributions.items():
                scores[term] += value
        offset += len(names)
    ranked = sorted(((t, v) for t, v in scores.items() if v > 0), key=lambda tv: (-tv[1], tv[0]))
    return Explanation(head, label, NGRAMS, tuple(ranked[:top_n]))


def _coef_row(coef: np.ndarray, index: int) -> np.ndarray:
    # A two-class linear head stores one row: the second class's score is +w, the first's -w
    # (see calibration.as_logits, which halves both; the ranking is what matters here).
    if coef.shape[0] == 1:
        return np.asarray(coef[0] if index == 1 else -coef[0], dtype=np.float64)
    return np.asarray(coef[index], dtype=np.float64)


def _names(vectorizer: Any) -> list[str]:
    cached = getattr(vectorizer, "_aduan_names", None)
    if cached is None:
        cached = [""] * len(vectorizer.vocabulary_)
        for term, j in vectorizer.vocabulary_.items():
            cached[j] = term
        vectorizer._aduan_names = cached
    return cached


def _fold_into_words(
    contributions: dict[str, float], vectorizer: Any, text: str, scores: defaultdict[str, float]
) -> None:
    """Share each character n-gram's contribution among the words that contain it (char_wb
    n-grams never cross a word boundary)."""
    low, high = vectorizer.ngram_range
    holders: defaultdict[str, list[str]] = defaultdict(list)
    for raw in text.lower().split():
        word = _WORD_EDGES.sub("", raw)
        padded = f" {raw} "
        for n in range(low, high + 1):
            for i in range(len(padded) - n + 1):
                gram = padded[i : i + n]
                if gram in contributions and word:
                    holders[gram].append(word)
    for gram, value in contributions.items():
        words = holders.get(gram)
        if words:
            for word in words:
                scores[word] += value / len(words)


def leave_one_word_out(
    classifier: ComplaintClassifier,
    text: str,
    head: str = "agency",
    label: str | None = None,
    top_n: int = TOP_N,
    max_spans: int = MAX_SPANS,
) -> Explanation:
    """The words whose removal lowers the probability of `label` (default: the predicted one)
    most. Texts longer than `max_spans` words are cut into `max_spans` spans instead."""
    words = normalize_text(text).split()
    if not words:
        return Explanation(head, label or "", LEAVE_ONE_OUT, ())
    width = max(1, math.ceil(len(words) / max_spans))
    spans = [(i, min(i + width, len(words))) for i in range(0, len(words), width)]
    variants = [" ".join(words)] + [" ".join(words[:a] + words[b:]) or "." for a, b in spans]
    proba = classifier.predict_proba(variants)[head]
    labels = classifier.labels[head].labels
    index = labels.index(label) if label in labels else int(np.argmax(proba[0]))
    drops = proba[0, index] - proba[1:, index]
    ranked = sorted(
        ((" ".join(words[a:b]), float(d)) for (a, b), d in zip(spans, drops, strict=True)),
        key=lambda tv: -tv[1],
    )
    return Explanation(
        head, labels[index], LEAVE_ONE_OUT, tuple((t, d) for t, d in ranked[:top_n] if d > 0)
    )


def explain(
    classifier: ComplaintClassifier, text: str, head: str = "agency", method: str | None = None
) -> Explanation:
    """`method` or, by default, n-gram contributions for a TF-IDF model and leave-one-word-out
    for any other kind."""
    if method is None:
        method = NGRAMS if classifier.config.get("model_type") == "aduan-tfidf" else LEAVE_ONE_OUT
    if method == NGRAMS:
        found = ngram_contributions(classifier, text, head)
        if found is None:
            raise ValueError("this model has no TF-IDF part to explain")
        return found
    if method == LEAVE_ONE_OUT:
        return leave_one_word_out(classifier, text, head)
    raise ValueError(f"unknown explanation method {method!r}")
