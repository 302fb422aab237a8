"""Prior correction (logit adjustment, Menon et al., 2021) of the transformer's mixture: minus
t * log(training class frequency), renormalised, so rare classes gain (for macro-F1).

Measured in bench/quality.md: it raised macro-F1 on models trained with mild class weights and
lowered it on those trained with 1/count weights (the loss already removed the prior); the
metric-driven search never chose it for `fast`. `aduan.model.transformer.mix` still applies a
correction a model directory records.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aduan.model.labels import LabelSet
from aduan.model.transformer import mix
from aduan.training.mixing import ROUTED_HEADS, fit_mixing, score

# Strengths of the ablation's fixed corrections.
PRIOR_CORRECTIONS = (0.25, 0.5, 1.0)
# Searched beside the routing and TF-IDF weights.
SEARCHED_CORRECTIONS = (0.0, 0.25, 0.5)


def log_priors(
    train_targets: dict[str, np.ndarray], labels: dict[str, LabelSet]
) -> dict[str, list[float]]:
    """log of each routed head's training class frequencies (add-one smoothed)."""
    out = {}
    for head in ROUTED_HEADS:
        y = train_targets[head]
        counts = np.bincount(y[y >= 0], minlength=len(labels[head])) + 1.0
        out[head] = np.log(counts / counts.sum()).round(6).tolist()
    return out


def correction(priors: dict[str, list[float]], tau: float) -> dict[str, dict[str, Any]] | None:
    """`fit_mixing`'s fixed weights for a correction of strength `tau` (None for 0)."""
    if not tau:
        return None
    return {head: {"prior_correction": tau, "log_prior": priors[head]} for head in ROUTED_HEADS}


def fit_mixing_with_priors(
    raw: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    routes: dict[str, np.ndarray],
    tfidf: dict[str, np.ndarray] | None,
    priors: dict[str, list[float]],
    objective: str,
    target: float,
    corrections: tuple[float, ...] = SEARCHED_CORRECTIONS,
) -> dict[str, dict[str, Any]]:
    """The mixing weights and, per head, the correction strength from `corrections` that
    score best together (`mixing.score`; the smallest strength wins a tie)."""
    best: dict[str, tuple[tuple[float, float], dict[str, Any]]] = {}
    for tau in corrections:
        trial = fit_mixing(raw, targets, routes, tfidf, objective, target, correction(priors, tau))
        for head in ROUTED_HEADS:
            logp = mix(raw, routes, {head: trial[head]}, tfidf)[head]
            found = score(logp, targets[head], objective, target)
            if head not in best or found > best[head][0]:
                best[head] = (found, trial[head])
    return {head: weights for head, (_, weights) in best.items()}
