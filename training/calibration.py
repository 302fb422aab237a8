"""The one calibration of a training run: per head, the temperature (Guo et al., 2017) and the
auto-route threshold for the promised accuracy, fitted on the validation months on the selected
model's output, with the validation metrics they give. They ship in config.json
(`temperature`, `thresholds`); a refitted model keeps them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from aduan.model.labels import HEADS

from .config import CalibrationConfig
from .data import Splits
from .metrics import calibrate_head

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    """What `calibrate` fitted and measured on the validation months."""

    temperatures: dict[str, float]
    thresholds: dict[str, float]
    metrics: dict[str, dict[str, Any]]  # per head: `metrics.head_metrics`
    predicted: dict[str, list[str]]  # per head: the predicted label of each validation row


def calibrate(
    logits: dict[str, np.ndarray],
    splits: Splits,
    target: float,
    settings: CalibrationConfig | None = None,
) -> Calibration:
    """Temperature and auto-route threshold per head from the model's `logits` on
    `splits.valid` (rows in order), the threshold chosen as `settings` say (default: the
    point method), and the validation metrics with them."""
    settings = settings or CalibrationConfig()
    out = Calibration({}, {}, {}, {})
    for head in HEADS:
        labels = splits.labels[head].labels
        fitted = calibrate_head(
            logits[head],
            splits.valid[head].tolist(),
            labels,
            target,
            method=settings.threshold_method,
            level=settings.confidence,
            margin=settings.margin,
        )
        if fitted.threshold > 1.0:
            log.warning(
                "%s: no threshold reaches %.0f%% accuracy on the %d validation rows (%s): "
                "nothing is routed automatically",
                head,
                100 * (target + settings.margin),
                len(splits.valid),
                settings.threshold_method,
            )
        out.temperatures[head], out.thresholds[head] = fitted.temperature, fitted.threshold
        out.metrics[head] = fitted.metrics
        out.predicted[head] = [labels[i] for i in fitted.proba.argmax(axis=1)]
    return out
