"""`aduan evaluate`: any labelled file against a model directory, with the stored threshold.

Honest by default: rows dated inside the period the model learned from (or was calibrated on)
are counted and warned about, `after` keeps only newer rows, and plots are written only where
asked, never into the model directory (which may be read-only, e.g. in the registry).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aduan.model import artifacts
from aduan.model.classifier import ComplaintClassifier
from aduan.model.labels import HEADS
from aduan.model.taxonomy import Taxonomy

from .data import ColumnMap, DataError, add_labels, apply_agency_map, check_date, load_many
from .metrics import head_metrics, plot_confusion, plot_reliability, summary

log = logging.getLogger(__name__)

# What `evaluate --json` writes per head beside the headline figures.
DETAIL_KEYS = ("unknown_label_rows", "unknown_labels", "per_class", "confusion", "reliability")


def evaluate(
    model_dir: Path | str,
    data: list[str] | list[Path],
    *,
    columns: ColumnMap | None = None,
    plots_dir: Path | None = None,
    after: str | None = None,
    batch_size: int = 256,
    engine: str = "auto",
) -> dict[str, Any]:
    """Metrics per head on every usable row of `data` (only rows dated after `after` when
    given).

    Labels are derived exactly as at training time (the model's own taxonomy and agency map);
    agencies the model never saw become `Lainnya` like rare ones did, and category codes the
    model does not know count as errors and are reported. The result's `warnings` say when
    rows fall inside the model's training period.
    """
    model_dir = Path(model_dir)
    classifier = ComplaintClassifier.load(model_dir, engine=engine)
    taxonomy = Taxonomy.load(model_dir / artifacts.TAXONOMY)
    metrics_path = model_dir / artifacts.METRICS
    trained = artifacts.read_json(metrics_path) if metrics_path.is_file() else {}
    seen = artifacts.data_range(classifier.config, trained)
    frame = load_many([str(p) for p in data], columns)
    result: dict[str, Any] = {"model_version": classifier.version, "data_range": seen}
    if after:
        keep = frame["created_at"].dt.normalize() > pd.Timestamp(check_date(after, "--after"))
        result["excluded_rows"] = int((~keep).sum())
        frame = frame[keep].reset_index(drop=True)
        if frame.empty:
            raise DataError(f"no rows dated after {after} in {[str(p) for p in data]}")
    result["rows"] = len(frame)
    result["overlap"] = training_overlap(frame, seen)
    result["warnings"] = []
    if result["overlap"]["rows"]:
        warning = overlap_warning(result["overlap"], len(frame))
        log.warning(warning)
        result["warnings"].append(warning)
    frame, proba, scores = score_rows(classifier, add_labels(frame, taxonomy), batch_size)
    for head in HEADS:
        metrics = scores[head]
        result[head] = {**summary(metrics), **{k: metrics[k] for k in DETAIL_KEYS}}
        if plots_dir is not None:
            result[head]["plots"] = _plots(
                frame[head].tolist(),
                proba[head],
                classifier.labels[head].labels,
                metrics,
                Path(plots_dir),
                head,
            )
    result["details"] = scores
    return result


def training_overlap(frame: pd.DataFrame, seen: dict[str, Any] | None) -> dict[str, Any]:
    """How many rows are dated inside the period the model learned from."""
    if not seen or frame.empty:
        return {"rows": 0, "seen_from": None, "seen_until": None}
    day = frame["created_at"].dt.normalize()
    inside = (day >= pd.Timestamp(seen["from"])) & (day <= pd.Timestamp(seen["seen_until"]))
    return {"rows": int(inside.sum()), "seen_from": seen["from"], "seen_until": seen["seen_until"]}


def overlap_warning(overlap: dict[str, Any], rows: int) -> str:
    return (
        f"{overlap['rows']} of {rows} evaluated rows are dated inside the model's training "
        f"period ({overlap['seen_from']} to {overlap['seen_until']}): it learned from them or "
        "chose its temperatures and thresholds on them, so these figures are optimistic; "
        f"pass --after {overlap['seen_until']} to evaluate only newer rows"
    )


def _plots(
    y_true: list[str],
    proba: np.ndarray,
    labels: tuple[str, ...],
    metrics: dict[str, Any],
    plots_dir: Path,
    head: str,
) -> dict[str, str]:
    predicted = [labels[i] for i in proba.argmax(axis=1)]
    shown = sorted(set(labels) | set(y_true))
    confusion = plot_confusion(
        y_true,
        predicted,
        shown,
        plots_dir / f"eval_confusion_{head}.png",
        f"{head}: confusion on {len(y_true)} rows",
    )
    reliability = plot_reliability(
        metrics["reliability"],
        plots_dir / f"eval_reliability_{head}.png",
        f"{head}: reliability on {len(y_true)} rows",
    )
    return {"confusion": str(confusion), "reliability": str(reliability)}


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


def measure(
    model_dir: Path, frame: pd.DataFrame, batch_size: int = 256
) -> tuple[str, dict[str, dict[str, Any]]]:
    """A model directory's version and `head_metrics` per head on already loaded rows (the
    promotion gate scores live model and candidate on the same rows this way)."""
    classifier = ComplaintClassifier.load(model_dir)
    taxonomy = Taxonomy.load(model_dir / artifacts.TAXONOMY)
    _, _, scores = score_rows(classifier, add_labels(frame, taxonomy), batch_size)
    return classifier.version, scores
