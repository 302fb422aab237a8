"""The transformer's parts besides the network: operator topics and their routing table, the
targets of each head, and the mixing of encoder, routing table and TF-IDF model, chosen on the
validation months (for log-likelihood, or for the figures the product promises).

The mixing chooses each component's temperature (it mixes probabilities) and the weights; the
temperature and auto-route threshold each head ships with are fitted afterwards, once, on the
mixture (`calibration.py`). The ablation and the prior-correction search live in
`experiments/`."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from aduan.model.labels import LabelSet
from aduan.model.transformer import RoutingTable, mix

from .data import Splits
from .metrics import choose_threshold, fit_temperature

log = logging.getLogger(__name__)

NO_TOPIC = "(tanpa topik)"
OTHER_TOPIC = "(topik lain)"
ROUTED_HEADS = ("category", "agency")
MIXING_OBJECTIVES = ("nll", "metrics")
_GRID = [round(x * 0.1, 1) for x in range(10)]


def topic_labels(splits: Splits, min_rows: int) -> tuple[pd.Series, pd.Series, LabelSet]:
    """Topics with at least `min_rows` training rows; the rest pooled, empty ones marked."""
    counts = splits.train["topic"].value_counts()
    frequent = {t for t, n in counts.items() if n >= min_rows and t}

    def fold(topic: str) -> str:
        return NO_TOPIC if not topic else topic if topic in frequent else OTHER_TOPIC

    train, valid = splits.train["topic"].map(fold), splits.valid["topic"].map(fold)
    return train, valid, LabelSet.from_values(pd.concat([train, valid]))


def routing_table(topics: pd.Series, frame: pd.DataFrame) -> RoutingTable:
    """P(label | topic) for the routed heads, as counted on `frame`."""
    tables: dict[str, dict[str, dict[str, float]]] = {}
    for head in ROUTED_HEADS:
        counts = pd.crosstab(topics, frame[head])
        tables[head] = {
            str(topic): {
                str(label): round(float(n) / row.sum(), 6) for label, n in row.items() if n > 0
            }
            for topic, row in counts.iterrows()
        }
    return RoutingTable(sorted(tables["agency"]), tables)


def head_targets(
    splits: Splits, labels: dict[str, LabelSet], topics: tuple[pd.Series, pd.Series] | None
) -> dict[str, dict[str, np.ndarray]]:
    """Label ids per part ("train", "valid") and head; -1 where a label is unknown."""
    targets: dict[str, dict[str, np.ndarray]] = {"train": {}, "valid": {}}
    for i, (part, frame) in enumerate((("train", splits.train), ("valid", splits.valid))):
        columns = {h: frame[h] for h in ROUTED_HEADS}
        if topics is not None and "topic" in labels:
            columns["topic"] = topics[i]
        for head, values in columns.items():
            index = labels[head].label2id
            targets[part][head] = np.array([index.get(v, -1) for v in values])
    return targets


def score(logp: np.ndarray, y: np.ndarray, objective: str, target: float) -> tuple[float, float]:
    """Higher is better: (accuracy + macro-F1 + auto-routed share at the promised accuracy,
    the figures the product reports; log-likelihood breaks ties), or log-likelihood alone."""
    known = y >= 0
    loglik = float(logp[known, y[known]].mean())
    if objective == "nll":
        return loglik, 0.0
    pred = logp.argmax(axis=1)
    correct = pred == y
    labels = sorted(set(y[known]) | set(pred[known]))
    macro = f1_score(y[known], pred[known], labels=labels, average="macro", zero_division=0)
    confidence = np.exp(logp.max(axis=1))
    threshold = choose_threshold(confidence, correct, target)
    return float(correct.mean() + macro + (confidence >= threshold).mean()), loglik


def fit_mixing(
    raw: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    routes: dict[str, np.ndarray],
    tfidf: dict[str, np.ndarray] | None,
    objective: str = "nll",
    target: float = 0.95,
    fixed: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Temperatures of each component, then the mixing weights on the validation rows.

    `nll`: routing and TF-IDF weights by log-likelihood. `metrics`: for accuracy + macro-F1 +
    auto-routed share at `target` accuracy (log-likelihood favours the frequent agencies and
    costs macro-F1). `fixed` holds, per head, weights every trial keeps (an experiment's
    prior correction).
    """
    if objective not in MIXING_OBJECTIVES:
        raise ValueError(f"mixing objective must be one of {MIXING_OBJECTIVES}, got {objective!r}")
    mixing: dict[str, dict[str, Any]] = {}
    for head in ROUTED_HEADS:
        y = targets[head]
        weights: dict[str, Any] = {"encoder_temperature": fit_temperature(raw[head], y)}
        if "topic" in raw:
            weights["topic_temperature"] = fit_temperature(raw["topic"], targets["topic"])
        if tfidf is not None:
            weights["tfidf_temperature"] = fit_temperature(tfidf[head], y)
        held = (fixed or {}).get(head, {})
        best: tuple[tuple[float, float], dict[str, Any]] = ((-np.inf, -np.inf), {})
        for a in _GRID if routes else [0.0]:
            for b in _GRID if tfidf is not None else [0.0]:
                if a + b > 0.9:
                    continue
                trial: dict[str, Any] = {"routing_weight": a, "tfidf_weight": b, **held}
                logp = mix(raw, routes, {head: {**weights, **trial}}, tfidf)[head]
                trial_score = score(logp, y, objective, target)
                if trial_score > best[0]:
                    best = (trial_score, trial)
        mixing[head] = {**weights, **best[1]}
        log.info(
            "%s mixing (%s): routing %.1f, tf-idf %.1f",
            head,
            objective,
            best[1]["routing_weight"],
            best[1]["tfidf_weight"],
        )
    return mixing
