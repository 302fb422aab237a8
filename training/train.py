"""`aduan train`: labelled data in, a self-describing model directory out.

A run, top to bottom (`_train_main`):

    splits      = load_splits(config)                      data checks, time split
    selection   = trainer.select(splits)                   fit on the training months, choose
                                                           on the validation months
    calibration = calibrate(selection's validation output) temperatures + thresholds, once
    model       = trainer.refit(selection, every row)      with `refit_all`; else the selected
    write_directory(model, ...)                            config.json, metrics.json, card, ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aduan.model.artifacts import ModelKind
from aduan.model.classifier import MANY_UNKNOWN
from aduan.model.registry import DEFAULT_KEEP, Registry

from . import distributed
from .calibration import Calibration, calibrate
from .config import TrainConfig
from .data import Splits, load_splits
from .directory import Outcome, write_directory
from .steps import KindTrainer, Selection, TrainerFactory

log = logging.getLogger(__name__)


def _tfidf_trainer(config: TrainConfig, checkpoint_dir: Path) -> KindTrainer[Any]:
    from .baseline import TfidfTrainer

    return TfidfTrainer(config, checkpoint_dir)


def _transformer_trainer(config: TrainConfig, checkpoint_dir: Path) -> KindTrainer[Any]:
    from .finetune import TransformerTrainer  # imports torch: only when asked for

    return TransformerTrainer(config, checkpoint_dir)


# `model_kind` setting -> its trainer; the model kinds themselves live in `aduan.model`.
TRAINERS: dict[str, TrainerFactory] = {
    "tfidf": _tfidf_trainer,
    "transformer": _transformer_trainer,
}


def kind_trainer(
    config: TrainConfig, checkpoint_dir: Path, factory: TrainerFactory | None = None
) -> KindTrainer[Any]:
    """The trainer of the configured model kind (or the one `factory` makes)."""
    if factory is None:
        factory = TRAINERS.get(config.model_kind)
        if factory is None:
            kinds = list(TRAINERS)
            raise ValueError(f"unknown model_kind {config.model_kind!r}; choose from {kinds}")
    return factory(config, checkpoint_dir)


def every_row(splits: Splits) -> Splits:
    """The splits with every labelled row (training + validation months) to train on."""
    rows = pd.concat([splits.train, splits.valid], ignore_index=True)
    return Splits(rows, splits.valid, splits.labels, splits.agency_map, split=splits.split)


def resolved(config: TrainConfig, splits: Splits) -> TrainConfig:
    """The settings with the dates of the split the data gave (what the model records, and
    what reproduces the run on the same files)."""
    if splits.split is None:
        return config
    return dataclasses.replace(
        config,
        train_until=splits.split.train_until,
        valid_from=splits.split.valid_from,
        valid_until=splits.split.valid_until,
    )


def validation_logits(selection: Selection, splits: Splits) -> dict[str, np.ndarray]:
    """The selected model's log-probabilities on the validation rows (computed by selection
    when it had them, else now)."""
    if selection.valid_logits is not None:
        return selection.valid_logits
    return selection.model.logits(splits.valid["text"].tolist())


def drift_reference(model: ModelKind, splits: Splits, calibration: Calibration) -> dict[str, Any]:
    """What the service compares its live traffic with (drift): the distribution of predicted
    agencies and the review share on the validation months, the training label distribution,
    and how much of the validation texts the model could not read (words outside its
    vocabulary; measured before `refit_all` saw those texts)."""
    predicted = pd.Series(calibration.predicted["agency"], dtype="object")
    reference: dict[str, Any] = {
        "rows": len(predicted),
        "agency": {str(k): float(v) for k, v in predicted.value_counts(normalize=True).items()},
        "training_agency": {
            str(k): float(v) for k, v in splits.train["agency"].value_counts(normalize=True).items()
        },
        "review_share": 1.0 - float(calibration.metrics["agency"]["auto_route_coverage"]),
    }
    unknown = getattr(model, "unknown_word_share", None)
    shares = unknown(splits.valid["text"].tolist()) if unknown is not None else None
    if shares is not None and (~np.isnan(shares)).any():
        known = shares[~np.isnan(shares)]
        reference["unknown_word_share"] = float(known.mean())
        reference["many_unknown_share"] = float((known >= MANY_UNKNOWN).mean())
    return reference


def train(
    config: TrainConfig,
    output: Path | str,
    *,
    model_version: str | None = None,
    trainer: TrainerFactory | None = None,
) -> dict[str, Any]:
    """Train, calibrate and write a complete model directory at `output` (atomically);
    `model_version` names it (default: `<preset>-<UTC timestamp>`); `trainer` replaces the
    model kind's own (an experiment's).

    Under `torchrun` every process trains (data-parallel, `distributed.py`) and rank 0 alone
    writes; the others return an empty dict."""
    output = Path(output)
    checkpoint_dir = output.parent / f".{output.name}.checkpoint"
    with distributed.session(config.device):
        splits, _ = load_splits(config)
        config = resolved(config, splits)
        kind = kind_trainer(config, checkpoint_dir, trainer)
        if not distributed.is_main():
            _train_worker(config, kind, splits)
            return {}
        metrics = _train_main(config, kind, splits, output, model_version)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return metrics


def _train_worker(config: TrainConfig, kind: KindTrainer[Any], splits: Splits) -> None:
    """A process other than rank 0: the same training steps (its gradients averaged with the
    others'); calibration and writing are rank 0's."""
    selection = kind.select(splits)
    if config.refit_all:
        kind.refit(selection, every_row(splits))


def _train_main(
    config: TrainConfig,
    kind: KindTrainer[Any],
    splits: Splits,
    output: Path,
    model_version: str | None,
) -> dict[str, Any]:
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        started = time.perf_counter()
        selection = kind.select(splits)
        calibration = calibrate(
            validation_logits(selection, splits),
            splits,
            config.route_accuracy,
            config.calibration,
        )
        outcome = Outcome(
            config,
            splits,
            selection,
            calibration,
            drift_reference(selection.model, splits, calibration),
            model_version=model_version,
        )
        model = selection.model
        if config.refit_all:
            every = every_row(splits)
            model = kind.refit(selection, every)
            until = str(every.train["created_at"].max().date())
            log.info("refitted on all %d rows up to %s", len(every.train), until)
            outcome.trained_on = {
                "rows": len(every.train),
                "until": until,
                "note": "weights refitted on training + validation rows after calibration",
                **selection.reused(),
            }
        outcome.seconds = time.perf_counter() - started
        metrics = write_directory(workdir, model, outcome)
        if output.exists():
            shutil.rmtree(output)
        workdir.rename(output)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    log.info("model written to %s", output)
    return metrics


def train_version(
    config: TrainConfig,
    registry: Registry,
    *,
    promote: bool | None = None,
    keep: int = DEFAULT_KEEP,
    trainer: TrainerFactory | None = None,
    lock: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Train a new version into `registry`; returns (version, metrics).

    `promote` None makes it live only when the registry has no live version yet (the first
    one) or only `aduan up`'s stand-in baseline; True always, False never. Old versions beyond
    the newest `keep` (and the live one) are pruned afterwards. The registry's training lock
    is held throughout (`lock`=False: the caller holds it); another run writing into it
    raises `TrainingBusy`.
    """
    if not distributed.is_main():  # torchrun: rank 0 names, writes and adds the version
        return "", train(config, registry.staging("data-parallel-worker"), trainer=trainer)
    held = registry.training(config.preset) if lock else contextlib.nullcontext()
    with held:
        version = registry.new_version(config.preset)
        metrics = train(config, registry.staging(version), model_version=version, trainer=trainer)
        registry.add(registry.staging(version))
        if promote or (promote is None and (registry.live() is None or registry.stand_in())):
            registry.promote(version)
        registry.prune(keep, protect=[version])
    return version, metrics
