"""Turning raw scores into calibrated probabilities (temperature scaling)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, numerically stable."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def as_logits(scores: np.ndarray) -> np.ndarray:
    """Decision scores as an (n, classes) matrix; binary decision functions become two columns."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return np.stack([-scores / 2, scores / 2], axis=1)
    return scores
