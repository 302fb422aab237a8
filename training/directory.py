"""Writing a trained model directory: the kind's own files (`save`) and the ones every kind
shares (config.json, training_config.json, metrics.json, the model card, plots, taxonomy,
locations, the manifest)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aduan.model import artifacts
from aduan.model.artifacts import ModelKind
from aduan.model.labels import HEADS
from aduan.model.location import Gazetteer, StreetIndex
from aduan.model.resources import default_gazetteer
from aduan.model.taxonomy import taxonomy_text

from . import distributed
from .calibration import Calibration
from .card import render_card
from .config import TrainConfig
from .data import Splits
from .metrics import plot_confusion, plot_reliability
from .provenance import portable, portable_settings, provenance
from .steps import Selection

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a training run records beside the model's own files."""

    config: TrainConfig
    splits: Splits
    selection: Selection
    calibration: Calibration
    reference: dict[str, Any]  # the drift reference (`train.drift_reference`)
    seconds: float = 0.0
    trained_on: dict[str, Any] | None = None  # with `refit_all`: the rows the refit saw
    model_version: str | None = None


def write_directory(workdir: Path, model: ModelKind, outcome: Outcome) -> dict[str, Any]:
    """Every file of the model directory in `workdir`, the manifest last; returns the
    metrics (metrics.json)."""
    config, calibration = outcome.config, outcome.calibration
    stamp = datetime.now(UTC)
    extra: dict[str, Any] = dict(outcome.selection.chosen())
    if outcome.trained_on is not None:
        extra["trained_on"] = outcome.trained_on
    if (parallel := distributed.describe(config.device)) is not None:
        extra["data_parallel"] = parallel
    extra.update(model.save(workdir))
    model_config: dict[str, Any] = {
        "model_type": model.model_type,
        "format_version": artifacts.FORMAT_VERSION,
        "model_version": outcome.model_version or f"{config.preset}-{stamp:%Y%m%d-%H%M%S}",
        "created_at": stamp.isoformat(timespec="seconds"),
        "preset": config.preset,
        "base_encoder": portable(config.transformer.base) or None,
        "heads": {head: outcome.splits.labels[head].to_json() for head in HEADS},
        "temperature": calibration.temperatures,
        "thresholds": calibration.thresholds,
        "route_accuracy": config.route_accuracy,
        # How the thresholds were chosen for it (docs/quality.md, "The promise on later months").
        "calibration": dataclasses.asdict(config.calibration),
        "agency_map": outcome.splits.agency_map,
        "versions": artifacts.library_versions(),
        "split": {
            "train": outcome.splits.report.get("train_period"),
            "validation": outcome.splits.report.get("valid_period"),
            **({"basis": outcome.splits.split.basis} if outcome.splits.split else {}),
        },
        "provenance": provenance(config, outcome.splits),
        **extra,
    }
    _write_plots(workdir / artifacts.PLOTS, outcome.splits, calibration)
    metrics = {
        "split": {
            "train_until": config.train_until,
            "valid_from": config.valid_from,
            "valid_until": config.valid_until,
            "basis": outcome.splits.split.basis if outcome.splits.split else "given",
        },
        "data": outcome.splits.report,
        "training_seconds": round(outcome.seconds, 1),
        "validation": calibration.metrics,
        **outcome.selection.report,
        "reference": outcome.reference,
    }
    artifacts.write_json(workdir / artifacts.CONFIG, model_config)
    artifacts.write_json(workdir / artifacts.TRAINING_CONFIG, portable_settings(config))
    artifacts.write_json(workdir / artifacts.METRICS, metrics)
    (workdir / artifacts.CARD).write_text(render_card(model_config, metrics), encoding="utf-8")
    (workdir / artifacts.TAXONOMY).write_text(taxonomy_text(config.taxonomy), encoding="utf-8")
    _write_locations(workdir, outcome.splits)
    artifacts.write_manifest(workdir)  # last: every file is in place
    _make_readable(workdir)
    return metrics


def _write_plots(plots: Path, splits: Splits, calibration: Calibration) -> None:
    for head in HEADS:
        plot_confusion(
            splits.valid[head].tolist(),
            calibration.predicted[head],
            list(splits.labels[head].labels),
            plots / f"confusion_{head}.png",
            f"{head}: validation confusion",
        )
        plot_reliability(
            calibration.metrics[head]["reliability"],
            plots / f"reliability_{head}.png",
            f"{head}: validation reliability",
        )


def _make_readable(directory: Path) -> None:
    # mkdtemp creates 0700; a model directory is read by other users (the service container).
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_locations(workdir: Path, splits: Splits) -> None:
    """Learn street/landmark -> kelurahan from every labelled address (train and validation)."""
    gazetteer = default_gazetteer()
    if not gazetteer.is_file():
        log.warning("gazetteer %s not found; no street index learned", gazetteer)
        return
    rows = [
        *zip(splits.train["address"], splits.train["kelurahan"], strict=True),
        *zip(splits.valid["address"], splits.valid["kelurahan"], strict=True),
    ]
    index = StreetIndex.learn(rows, Gazetteer.load(gazetteer))
    artifacts.write_json(workdir / artifacts.LOCATIONS, index.to_json())
