"""`aduan evaluate`: any labelled file against a model directory, with the stored threshold."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aduan.model.artifacts import PLOTS
from aduan.model.classifier import ComplaintClassifier
from aduan.model.labels import HEADS
from aduan.model.taxonomy import Taxonomy

from .data import ColumnMap, add_labels, apply_agency_map, load_many
from .metrics import head_metrics, plot_confusion, summary

log = logging.getLogger(__name__)


def evaluate(
    model_dir: Path | str,
    data: list[str] | list[Path],
    *,
    columns: ColumnMap | None = None,
    plots_dir: Path | None = None,
    batch_size: int = 256,
    engine: str = "auto",
) -> dict[str, Any]:
    """Metrics per head on every usable row of `data`.

    Labels are derived exactly as at training time (the model's own taxonomy and agency map);
    agencies the model never saw become `Lainnya` like rare ones did, and category codes the
    model does not know count as errors and are reported.
    """
    model_dir = Path(model_dir)
    classifier = ComplaintClassifier.load(model_dir, engine=engine)
    taxonomy = Taxonomy.load(model_dir / "taxonomy.yaml")
    frame = add_labels(load_many([str(p) for p in data], columns), taxonomy)
    frame, proba, scores = score_rows(classifier, frame, batch_size)
    result: dict[str, Any] = {"rows": len(frame), "model_version": classifier.version}
    details: dict[str, Any] = {}
    plots_dir = plots_dir or model_dir / PLOTS
    for head in HEADS:
        matrix, metrics = proba[head], scores[head]
        labels = classifier.labels[head].labels
        result[head] = summary(metrics)
        result[head]["unknown_label_rows"] = metrics["unknown_label_rows"]
        details[head] = metrics
        predicted = [labels[i] for i in matrix.argmax(axis=1)]
        shown = sorted(set(labels) | set(frame[head]))
        result[head]["confusion_png"] = str(
            plot_confusion(
                frame[head].tolist(),
                predicted,
                shown,
                plots_dir / f"eval_confusion_{head}.png",
                f"{head}: confusion on {len(frame)} rows",
            )
        )
    result["details"] = details
    return result


def score_rows(
    classifier: ComplaintClassifier, frame: pd.DataFrame, batch_size: int = 256
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Labelled rows (agencies mapped as at training time), the model's probabilities and
    `head_metrics` per head with the stored thresholds."""
    frame = apply_agency_map(frame, classifier.config.get("agency_map", {}))
    texts = frame["text"].tolist()
    chunks: dict[str, list[np.ndarray]] = {head: [] for head in HEADS}
    for start in range(0, len(texts), batch_size):
        batch = classifier.predict_proba(texts[start : start + batch_size])
        for head in HEADS:
            chunks[head].append(batch[head])
    proba = {head: np.concatenate(chunks[head]) for head in HEADS}
    scores = {
        head: head_metrics(
            frame[head].tolist(),
            proba[head],
            classifier.labels[head].labels,
            classifier.thresholds[head],
        )
        for head in HEADS
    }
    return frame, proba, scores
