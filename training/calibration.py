"""The one calibration of a training run: per head, the temperature (Guo et al., 2017) and the
auto-route threshold for the promised accuracy, fitted on the validation months on the selected
model's output, with the validation metrics they give. They ship in config.json
(`temperature`, `thresholds`); a refitted model keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aduan.model.labels import HEADS

from .data import Splits
from .metrics import calibrate_head


@dataclass
class Calibration:
    """What `calibrate` fitted and measured on the validation months."""

    temperatures: dict[str, float]
    thresholds: dict[str, float]
    metrics: dict[str, dict[str, Any]]  # per head: `metrics.head_metrics`
    predicted: dict[str, list[str]]  # per head: the predicted label of each validation row


def calibrate(logits: dict[str, np.ndarray], splits: Splits, target: float) -> Calibration:
    """Temperature and auto-route threshold per head from the model's `logits` on
    `splits.valid` (rows in order), and the validation metrics with them."""
    out = Calibration({}, {}, {}, {})
    for head in HEADS:
        labels = splits.labels[head].labels
        fitted = calibrate_head(logits[head], splits.valid[head].tolist(), labels, target)
        out.temperatures[head], out.thresholds[head] = fitted.temperature, fitted.threshold
        out.metrics[head] = fitted.metrics
        out.predicted[head] = [labels[i] for i in fitted.proba.argmax(axis=1)]
    return out
