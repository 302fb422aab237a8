"""The contract between a training run (`train.py`) and each model kind's trainer: two typed
steps, nothing handed on the side.

    select(splits) -> Selection        fit on the training months, choose on the validation
                                       months (epochs, mixing weights, ...)
    refit(selection, every) -> kind    the same kind fitted again on every row, with what the
                                       selection chose

Between the two the run calibrates the selected model once (`calibration.py`); a refitted
model ships with those temperatures and thresholds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from aduan.model.artifacts import ModelKind

from .config import TrainConfig
from .data import Splits


@dataclass
class Selection:
    """What a kind's selection step returns: the model fitted on the training months, running
    on the engine it ships with, and what the validation months chose."""

    model: ModelKind
    # The model's log-probabilities on the validation rows, when selection computed them
    # anyway (mixing does): calibration uses them instead of running the network again.
    valid_logits: dict[str, np.ndarray] | None = None
    # Extra entries for metrics.json (what an experiment measured, e.g. its ablation).
    report: dict[str, Any] = field(default_factory=dict)

    def chosen(self) -> dict[str, Any]:
        """config.json entries: what the validation months chose."""
        return {}

    def reused(self) -> dict[str, Any]:
        """What a refit takes over from this selection, for config.json's `trained_on`."""
        return {}


S = TypeVar("S", bound=Selection)


class KindTrainer(Protocol[S]):
    """A model kind's trainer; `train.TRAINERS` maps `model_kind` to its factory."""

    def select(self, splits: Splits) -> S:
        """Fit on `splits.train`, choose what the kind chooses on `splits.valid`."""
        ...

    def refit(self, selection: S, every: Splits) -> ModelKind:
        """Fit again on `every.train` (all rows) with the selection's choices."""
        ...


# (settings, checkpoint folder) -> a trainer; an experiment passes its own to `train.train`.
TrainerFactory = Callable[[TrainConfig, Path], KindTrainer[Any]]
