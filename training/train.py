"""`aduan train`: labelled data in, a self-describing model directory out."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from model import artifacts
from model.classifier import Backend, TfidfBackend
from model.labels import HEADS
from model.location import DEFAULT_GAZETTEER, Gazetteer, StreetIndex
from model.taxonomy import DEFAULT_TAXONOMY, Taxonomy
from training.card import render_card
from training.config import TrainConfig
from training.data import ColumnMap, Splits, load_many, prepare
from training.metrics import calibrate_head, plot_confusion

log = logging.getLogger(__name__)


def load_splits(config: TrainConfig) -> tuple[Splits, Taxonomy]:
    taxonomy = Taxonomy.load(config.taxonomy or DEFAULT_TAXONOMY)
    frame = load_many(config.data, ColumnMap(**config.columns))
    splits = prepare(
        frame,
        taxonomy,
        train_until=config.train_until,
        valid_from=config.valid_from,
        valid_until=config.valid_until or None,
        min_agency_rows=config.min_agency_rows,
    )
    log.info("data: %s", splits.report)
    return splits, taxonomy


def fit_backend(
    config: TrainConfig, splits: Splits, workdir: Path, checkpoint_dir: Path
) -> tuple[Backend, dict[str, Any]]:
    """Fit the model kind named in the config and save its weights into `workdir`.

    Returns the backend and what the kind adds to config.json.
    """
    if config.model_kind == "tfidf":
        from training.baseline import fit_baseline

        heads = fit_baseline(splits.train, config)
        heads.save(workdir)
        return TfidfBackend(heads, splits.labels), {}
    if config.model_kind == "transformer":
        from training.finetune import fit_transformer

        return fit_transformer(config, splits, workdir, checkpoint_dir)
    raise ValueError(f"unknown model_kind {config.model_kind!r}")


def _refit_all(config: TrainConfig, splits: Splits, workdir: Path) -> dict[str, Any]:
    """Replace the saved weights by a fit on training + validation rows, same settings; the
    temperatures and thresholds chosen on validation stay. TF-IDF kind only: a transformer
    refit would need its epoch count fixed in advance (not done yet)."""
    from training.baseline import fit_baseline

    rows = pd.concat([splits.train, splits.valid], ignore_index=True)
    fit_baseline(rows, config).save(workdir)
    log.info("refitted on all %d rows up to %s", len(rows), rows["created_at"].max().date())
    return {
        "rows": len(rows),
        "until": str(rows["created_at"].max().date()),
        "note": "weights refitted on training + validation rows after calibration",
    }


def calibrate(backend: Backend, splits: Splits, target: float) -> tuple[dict, dict, dict]:
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


def train(config: TrainConfig, output: Path | str) -> dict[str, Any]:
    """Train, calibrate and write a complete model directory at `output` (atomically)."""
    output = Path(output)
    if config.refit_all and config.model_kind != "tfidf":  # say so before hours of training
        raise ValueError("refit_all is implemented for the tfidf model kind only")
    splits, taxonomy = load_splits(config)
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        started = time.perf_counter()
        checkpoint_dir = output.parent / f".{output.name}.checkpoint"
        backend, extra = fit_backend(config, splits, workdir, checkpoint_dir)
        train_seconds = time.perf_counter() - started
        temperatures, thresholds, valid_metrics = calibrate(backend, splits, config.route_accuracy)
        if config.refit_all:
            extra = {**extra, "trained_on": _refit_all(config, splits, workdir)}
            train_seconds = time.perf_counter() - started
        metrics = _write_directory(
            workdir,
            config,
            splits,
            taxonomy,
            temperatures,
            thresholds,
            valid_metrics,
            train_seconds,
            extra,
        )
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
    config: TrainConfig,
    splits: Splits,
    taxonomy: Taxonomy,
    temperatures: dict,
    thresholds: dict,
    valid_metrics: dict,
    train_seconds: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    stamp = datetime.now(UTC)
    model_config: dict[str, Any] = {
        "model_type": "aduan-tfidf" if config.model_kind == "tfidf" else "aduan-transformer",
        "model_version": f"{config.preset}-{stamp:%Y%m%d-%H%M%S}",
        "created_at": stamp.isoformat(timespec="seconds"),
        "preset": config.preset,
        "base_encoder": config.base or None,
        "heads": {head: splits.labels[head].to_json() for head in HEADS},
        "temperature": temperatures,
        "thresholds": thresholds,
        "route_accuracy": config.route_accuracy,
        "agency_map": splits.agency_map,
        "versions": {pkg: version(pkg) for pkg in ("scikit-learn", "transformers", "torch")},
    }
    extra = dict(extra)
    model_config["heads"].update(extra.pop("extra_heads", {}))
    variants = extra.pop("validation_variants", None)
    model_config.update(extra)
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
    artifacts.write_json(workdir / artifacts.CONFIG, model_config)
    artifacts.write_json(workdir / artifacts.TRAINING_CONFIG, config.to_dict())
    artifacts.write_json(workdir / artifacts.METRICS, metrics)
    (workdir / artifacts.CARD).write_text(render_card(model_config, metrics), encoding="utf-8")
    shutil.copyfile(config.taxonomy or DEFAULT_TAXONOMY, workdir / artifacts.TAXONOMY)
    _write_locations(workdir, splits)
    return metrics


def _make_readable(directory: Path) -> None:
    # mkdtemp creates 0700; a model directory is read by other users (the service container).
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_locations(workdir: Path, splits: Splits) -> None:
    """Learn street/landmark -> kelurahan from every labelled address (train and validation)."""
    if not DEFAULT_GAZETTEER.is_file():
        log.warning("gazetteer %s not found; no street index learned", DEFAULT_GAZETTEER)
        return
    rows = [
        *zip(splits.train["address"], splits.train["kelurahan"], strict=True),
        *zip(splits.valid["address"], splits.valid["kelurahan"], strict=True),
    ]
    index = StreetIndex.learn(rows, Gazetteer.load(DEFAULT_GAZETTEER))
    artifacts.write_json(workdir / artifacts.LOCATIONS, index.to_json())
