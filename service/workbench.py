"""What the workbench pages show, assembled from the live model and the store: the queue items
with their explanations, and the ML engineer's view of the model (metrics, plots, calibration
from operators' reviews, drift).

**Drift hook.** The model page shows drift figures from two places, so the retraining loop can
provide them without touching the page: PNG files named `drift*.png` in the model directory's
`plots/` folder, and a `drift` object in its `metrics.json` (shown as a table of name -> value).
`drift_figures()` is the one function to extend when drift arrives from elsewhere (e.g. live
metrics computed by the service).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aduan.model.artifacts import PLOTS
from aduan.model.explain import Explanation, ngram_contributions, tfidf_part
from aduan.model.pipeline import Pipeline

from .review import reliability, request_view
from .storage import StoredRequest

METRIC_KEYS = (
    ("accuracy", "Akurasi"),
    ("macro_f1", "Macro-F1"),
    ("top3_accuracy", "Top-3"),
    ("ece", "ECE"),
    ("threshold", "Ambang auto"),
    ("auto_route_coverage", "Auto-routed"),
    ("auto_route_accuracy", "Akurasi saat auto"),
)


def queue_items(pipeline: Pipeline, rows: list[StoredRequest]) -> list[dict[str, Any]]:
    """Queue rows as the page shows them, with the TF-IDF n-grams behind the predicted agency
    (exact and cheap; a transformer's leave-one-word-out is fetched on demand)."""
    items = []
    for row in rows:
        view = request_view(row)
        found: Explanation | None = None
        if tfidf_part(pipeline.classifier) is not None:
            found = ngram_contributions(pipeline.classifier, row.text, "agency", row.agency)
        view["ngrams"] = [t for t, _ in found.terms] if found else []
        items.append(view)
    return items


def plot_files(model_dir: Path) -> list[str]:
    """The PNG files under the model directory's `plots/` (confusion matrices, reliability
    diagrams, drift), by name."""
    folder = model_dir / PLOTS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob("*.png") if p.is_file())


def plot_path(model_dir: Path, name: str) -> Path | None:
    """A listed plot's path; None for anything else (no path tricks)."""
    return model_dir / PLOTS / name if name in plot_files(model_dir) else None


def drift_figures(pipeline: Pipeline, plots: list[str]) -> dict[str, Any]:
    """The drift section: `drift*.png` plots and `metrics.json`'s `drift` entries."""
    raw = pipeline.metrics.get("drift")
    table = (
        [(str(k), v) for k, v in raw.items() if not isinstance(v, dict | list)]
        if isinstance(raw, dict)
        else []
    )
    return {"plots": [p for p in plots if p.startswith("drift")], "table": table}


def model_summary(pipeline: Pipeline) -> dict[str, Any]:
    """Version, kind, training split and data, validation metrics per head, thresholds."""
    classifier = pipeline.classifier
    validation = pipeline.metrics.get("validation", {})
    heads = []
    for head, metrics in validation.items():
        if not isinstance(metrics, dict):
            continue
        rows = [(label, metrics.get(key)) for key, label in METRIC_KEYS]
        per_class = metrics.get("per_class") or {}
        heads.append(
            {
                "name": head,
                "rows": rows,
                "classes": len(classifier.classes_.get(head, ())),
                "validation_rows": metrics.get("rows"),
                "per_class": sorted(
                    per_class.items(), key=lambda kv: -int(kv[1].get("support", 0))
                ),
            }
        )
    return {
        "version": classifier.version,
        "model_type": classifier.config.get("model_type"),
        "created_at": classifier.config.get("created_at"),
        "preset": classifier.config.get("preset"),
        "base_encoder": classifier.config.get("base_encoder"),
        "model_dir": str(classifier.model_dir),
        "split": pipeline.metrics.get("split") or {},
        "data": {
            k: v
            for k, v in (pipeline.metrics.get("data") or {}).items()
            if isinstance(v, int | float | str)
        },
        "heads": heads,
        "thresholds": classifier.thresholds,
        "temperatures": classifier.temperatures,
    }


def reliability_svg(outcomes: list[tuple[float, bool]], size: int = 240) -> dict[str, Any]:
    """A reliability diagram (score vs share kept by operators) as SVG coordinates."""
    points = reliability(outcomes)
    pad = 28
    span = size - 2 * pad

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return round(pad + conf * span, 1), round(size - pad - acc * span, 1)

    return {
        "size": size,
        "pad": pad,
        "far": size - pad,
        "points": [
            {
                **p,
                "x": xy(p["confidence"], p["accuracy"])[0],
                "y": xy(p["confidence"], p["accuracy"])[1],
            }
            for p in points
        ],
        "total": len(outcomes),
    }
