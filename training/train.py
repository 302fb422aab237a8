"""`aduan train`: labelled data in, a self-describing model directory out."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aduan.model import artifacts
from aduan.model.artifacts import ModelKind
from aduan.model.classifier import MANY_UNKNOWN
from aduan.model.labels import HEADS
from aduan.model.location import Gazetteer, StreetIndex
from aduan.model.registry import DEFAULT_KEEP, Registry
from aduan.model.resources import default_gazetteer
from aduan.model.taxonomy import taxonomy_text

from . import distributed
from .card import render_card
from .config import TrainConfig
from .data import Splits, load_splits
from .metrics import calibrate_head, plot_confusion, plot_reliability
from .provenance import portable, portable_settings, provenance

log = logging.getLogger(__name__)

# What a trainer returns: the fitted model kind (saved by `train`) and what training adds to
# config.json (`validation_variants` goes to metrics.json; keys starting with "_" are handed
# to the refit only).
Fitted = tuple[ModelKind, dict[str, Any]]
Trainer = Callable[[TrainConfig, Splits, Path, Fitted | None], Fitted]


def _fit_tfidf(
    config: TrainConfig, splits: Splits, checkpoint_dir: Path, refit_of: Fitted | None
) -> Fitted:
    from aduan.model.tfidf import TfidfBackend

    from .baseline import fit_baseline

    return TfidfBackend(fit_baseline(splits.train, config), splits.labels), {}


def _fit_transformer(
    config: TrainConfig, splits: Splits, checkpoint_dir: Path, refit_of: Fitted | None
) -> Fitted:
    from .finetune import fit_transformer

    return fit_transformer(config, splits, checkpoint_dir, refit_of)


# `model_kind` setting -> its trainer; the model kinds themselves live in `aduan.model`.
TRAINERS: dict[str, Trainer] = {"tfidf": _fit_tfidf, "transformer": _fit_transformer}


def fit(
    config: TrainConfig, splits: Splits, checkpoint_dir: Path, refit_of: Fitted | None = None
) -> Fitted:
    """Fit the model kind named in the config on the training rows (with `refit_of`, the
    selection run's result, again with what it chose)."""
    trainer = TRAINERS.get(config.model_kind)
    if trainer is None:
        raise ValueError(f"unknown model_kind {config.model_kind!r}; choose from {list(TRAINERS)}")
    return trainer(config, splits, checkpoint_dir, refit_of)


def _refit_all(
    config: TrainConfig, splits: Splits, checkpoint_dir: Path, selected: Fitted
) -> Fitted:
    """The same kind fitted again on training + validation rows, with what the selection run
    chose (epochs, mixing); the temperatures and thresholds chosen on validation stay."""
    rows = pd.concat([splits.train, splits.valid], ignore_index=True)
    every = Splits(rows, splits.valid, splits.labels, splits.agency_map)
    refitted, extra = fit(config, every, checkpoint_dir, selected)
    log.info("refitted on all %d rows up to %s", len(rows), rows["created_at"].max().date())
    return refitted, {
        **extra,
        "rows": len(rows),
        "until": str(rows["created_at"].max().date()),
        "note": "weights refitted on training + validation rows after calibration",
    }


def calibrate(backend: ModelKind, splits: Splits, target: float) -> tuple[dict, dict, dict]:
    """Temperature per head, auto-route threshold per head and validation metrics."""
    logits = backend.logits(splits.valid["text"].tolist())
    temperatures, thresholds, metrics = {}, {}, {}
    for head in HEADS:
        labels = splits.labels[head].labels
        fitted = calibrate_head(logits[head], splits.valid[head].tolist(), labels, target)
        temperatures[head], thresholds[head] = fitted.temperature, fitted.threshold
        metrics[head] = fitted.metrics
        metrics[head]["predicted"] = [labels[i] for i in fitted.proba.argmax(axis=1)]
    return temperatures, thresholds, metrics


def drift_reference(backend: ModelKind, splits: Splits, valid_metrics: dict) -> dict[str, Any]:
    """What the service compares its live traffic with (drift): the distribution of predicted
    agencies and the review share on the validation months, the training label distribution,
    and how much of the validation texts the model could not read (words outside its
    vocabulary; measured before `refit_all` saw those texts)."""
    agency = valid_metrics["agency"]
    predicted = pd.Series(agency["predicted"], dtype="object")
    reference: dict[str, Any] = {
        "rows": len(predicted),
        "agency": {str(k): float(v) for k, v in predicted.value_counts(normalize=True).items()},
        "training_agency": {
            str(k): float(v) for k, v in splits.train["agency"].value_counts(normalize=True).items()
        },
        "review_share": 1.0 - float(agency["auto_route_coverage"]),
    }
    unknown = getattr(backend, "unknown_word_share", None)
    shares = unknown(splits.valid["text"].tolist()) if unknown is not None else None
    if shares is not None and (~np.isnan(shares)).any():
        known = shares[~np.isnan(shares)]
        reference["unknown_word_share"] = float(known.mean())
        reference["many_unknown_share"] = float((known >= MANY_UNKNOWN).mean())
    return reference


def train(
    config: TrainConfig, output: Path | str, *, model_version: str | None = None
) -> dict[str, Any]:
    """Train, calibrate and write a complete model directory at `output` (atomically);
    `model_version` names it (default: `<preset>-<UTC timestamp>`).

    Under `torchrun` every process trains (data-parallel, `distributed.py`) and rank 0 alone
    writes; the others return an empty dict."""
    output = Path(output)
    with distributed.session(config.device):
        splits, _ = load_splits(config)
        if not distributed.is_main():
            _train_worker(config, splits, output)
            return {}
        return _train_main(config, splits, output, model_version)


def _train_worker(config: TrainConfig, splits: Splits, output: Path) -> None:
    """A process other than rank 0: the same training steps (its gradients averaged with the
    others'), calibration and writing left to rank 0."""
    checkpoint_dir = output.parent / f".{output.name}.checkpoint"
    selected = fit(config, splits, checkpoint_dir)
    if config.refit_all:
        _refit_all(config, splits, checkpoint_dir, selected)


def _train_main(
    config: TrainConfig, splits: Splits, output: Path, model_version: str | None
) -> dict[str, Any]:
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        started = time.perf_counter()
        checkpoint_dir = output.parent / f".{output.name}.checkpoint"
        selected = fit(config, splits, checkpoint_dir)
        backend, extra = selected
        train_seconds = time.perf_counter() - started
        temperatures, thresholds, valid_metrics = calibrate(backend, splits, config.route_accuracy)
        reference = drift_reference(backend, splits, valid_metrics)
        if config.refit_all:
            backend, extra["trained_on"] = _refit_all(config, splits, checkpoint_dir, selected)
            train_seconds = time.perf_counter() - started
        extra = {k: v for k, v in extra.items() if not k.startswith("_")}
        if (parallel := distributed.describe(config.device)) is not None:
            extra["data_parallel"] = parallel
        extra.update(backend.save(workdir))
        metrics = _write_directory(
            workdir,
            backend.model_type,
            config,
            splits,
            temperatures,
            thresholds,
            valid_metrics,
            train_seconds,
            {**extra, "model_version": model_version, "reference": reference},
        )
        artifacts.write_manifest(workdir)  # last: every file is in place
        _make_readable(workdir)
        if output.exists():
            shutil.rmtree(output)
        workdir.rename(output)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    log.info("model written to %s", output)
    return metrics


def _write_directory(
    workdir: Path,
    model_type: str,
    config: TrainConfig,
    splits: Splits,
    temperatures: dict,
    thresholds: dict,
    valid_metrics: dict,
    train_seconds: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The files every kind shares: config, settings, metrics, card, taxonomy, locations."""
    stamp = datetime.now(UTC)
    extra = dict(extra)
    variants = extra.pop("validation_variants", None)
    reference = extra.pop("reference", None)
    version = extra.pop("model_version", None) or f"{config.preset}-{stamp:%Y%m%d-%H%M%S}"
    model_config: dict[str, Any] = {
        "model_type": model_type,
        "format_version": artifacts.FORMAT_VERSION,
        "model_version": version,
        "created_at": stamp.isoformat(timespec="seconds"),
        "preset": config.preset,
        "base_encoder": portable(config.base) or None,
        "heads": {head: splits.labels[head].to_json() for head in HEADS},
        "temperature": temperatures,
        "thresholds": thresholds,
        "route_accuracy": config.route_accuracy,
        "agency_map": splits.agency_map,
        "versions": artifacts.library_versions(),
        "provenance": provenance(config, splits.files),
        **extra,
    }
    plots = workdir / artifacts.PLOTS
    for head in HEADS:
        predicted = valid_metrics[head].pop("predicted")
        plot_confusion(
            splits.valid[head].tolist(),
            predicted,
            list(splits.labels[head].labels),
            plots / f"confusion_{head}.png",
            f"{head}: validation confusion",
        )
        plot_reliability(
            valid_metrics[head]["reliability"],
            plots / f"reliability_{head}.png",
            f"{head}: validation reliability",
        )
    metrics = {
        "split": {
            "train_until": config.train_until,
            "valid_from": config.valid_from,
            "valid_until": config.valid_until,
        },
        "data": splits.report,
        "training_seconds": round(train_seconds, 1),
        "validation": valid_metrics,
    }
    if variants:
        metrics["validation_variants"] = variants
    if reference:
        metrics["reference"] = reference
    artifacts.write_json(workdir / artifacts.CONFIG, model_config)
    artifacts.write_json(workdir / artifacts.TRAINING_CONFIG, portable_settings(config))
    artifacts.write_json(workdir / artifacts.METRICS, metrics)
    (workdir / artifacts.CARD).write_text(render_card(model_config, metrics), encoding="utf-8")
    (workdir / artifacts.TAXONOMY).write_text(taxonomy_text(config.taxonomy), encoding="utf-8")
    _write_locations(workdir, splits)
    return metrics


def train_version(
    config: TrainConfig,
    registry: Registry,
    *,
    promote: bool | None = None,
    keep: int = DEFAULT_KEEP,
) -> tuple[str, dict[str, Any]]:
    """Train a new version into `registry`; returns (version, metrics).

    `promote` None makes it live only when the registry has no live version yet (the first
    one); True always, False never. Old versions beyond the newest `keep` (and the live one)
    are pruned afterwards.
    """
    if not distributed.is_main():  # torchrun: rank 0 names, writes and adds the version
        return "", train(config, registry.staging("data-parallel-worker"))
    version = registry.new_version(config.preset)
    metrics = train(config, registry.staging(version), model_version=version)
    registry.add(registry.staging(version))
    if promote or (promote is None and registry.live() is None):
        registry.promote(version)
    registry.prune(keep, protect=[version])
    return version, metrics


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
