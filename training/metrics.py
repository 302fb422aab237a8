"""Quality metrics per head, temperature fitting and the auto-route threshold."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import beta
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from aduan.model.calibration import softmax

from .config import THRESHOLD_METHODS


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises validation log-loss (Guo et al., 2017)."""
    logits = np.asarray(logits, dtype=np.float64)
    known = y >= 0
    if not known.any():
        return 1.0
    logits, y = logits[known], y[known]

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

    result = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded")
    return float(np.exp(result.x))


def accuracy_lower_bound(hits: np.ndarray, rows: np.ndarray, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound, at confidence `level`, on the accuracy of
    `rows` rows of which `hits` were right (element-wise; 0 where nothing was right)."""
    hits = np.asarray(hits, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.float64)
    # The Beta quantile needs a positive first shape: hits of 0 give a bound of 0.
    bound = beta.ppf(1.0 - level, np.maximum(hits, 1.0), rows - hits + 1.0)
    return np.where(hits > 0, bound, 0.0)


def choose_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    target: float,
    *,
    method: str = "point",
    level: float = 0.95,
    margin: float = 0.0,
) -> float:
    """Lowest confidence threshold whose routed rows are at least `target` + `margin`
    accurate: as measured (`method` "point"), or by the lower confidence bound at `level`
    on that accuracy ("lcb"), which is never below the point estimate, so its threshold is
    never below the point threshold.

    Rows are routed when their confidence is >= the threshold. Among all thresholds that keep
    the routed accuracy >= target, the one routing the most rows wins. Returns a value above 1
    (route nothing) when no threshold reaches the target, e.g. with too few rows for the
    bound to reach it.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got {method!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"threshold confidence level must be in (0, 1), got {level}")
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], correct[order].astype(np.float64)
    routed = np.arange(1, len(hits) + 1)
    cum_hits = np.cumsum(hits)
    if method == "lcb":
        accuracy = accuracy_lower_bound(cum_hits, routed, level)
    else:
        accuracy = cum_hits / routed
    # Only cut where the next row has a lower score: ties are routed together.
    cuts = np.append(conf[1:] < conf[:-1], True) if len(conf) else np.array([], dtype=bool)
    # A hair below the target still counts: float sums of exact hits must not lose a cut.
    passing = np.flatnonzero((accuracy >= target + margin - 1e-12) & cuts)
    return float(conf[passing[-1]]) if len(passing) else 1.01


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = len(confidence)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            ece += gap * in_bin.sum() / total
    return float(ece)


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10
) -> list[dict[str, Any]]:
    """The reliability diagram's data: per confidence bin, how many rows fell in it, their mean
    confidence and their accuracy (a calibrated model has the two equal)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi) if lo > 0 else confidence <= hi
        count = int(in_bin.sum())
        out.append(
            {
                "lo": round(float(lo), 4),
                "hi": round(float(hi), 4),
                "count": count,
                "confidence": float(confidence[in_bin].mean()) if count else None,
                "accuracy": float(correct[in_bin].mean()) if count else None,
            }
        )
    return out


def head_metrics(
    y_true: list[str], proba: np.ndarray, labels: tuple[str, ...], threshold: float
) -> dict[str, Any]:
    """Accuracy, macro-F1, top-3, ECE, auto-route coverage/accuracy, per-class scores, the
    confusion counts and the reliability bins.

    True labels the model does not know count as errors and are listed under `unknown_labels`.
    """
    index = {label: i for i, label in enumerate(labels)}
    y_idx = np.array([index.get(y, -1) for y in y_true])
    pred_idx = proba.argmax(axis=1)
    y_pred = [labels[i] for i in pred_idx]
    correct = y_idx == pred_idx
    confidence = proba.max(axis=1)
    top3 = np.argsort(-proba, axis=1)[:, :3]
    top3_hit = (top3 == y_idx[:, None]).any(axis=1)
    routed = confidence >= threshold
    unknown = sorted({y for y in y_true if y not in index})
    present = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=present, zero_division=0
    )
    counts = confusion_matrix(y_true, y_pred, labels=present)
    return {
        "rows": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "top3_accuracy": float(top3_hit.mean()),
        "ece": expected_calibration_error(confidence, correct),
        "threshold": float(threshold),
        "auto_route_coverage": float(routed.mean()),
        "auto_route_accuracy": float(correct[routed].mean()) if routed.any() else None,
        "unknown_label_rows": int((y_idx < 0).sum()),
        "unknown_labels": unknown,
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)
        },
        # Rows are true labels, columns predicted ones, both in `labels` order.
        "confusion": {"labels": present, "matrix": counts.astype(int).tolist()},
        "reliability": reliability_bins(confidence, correct),
    }


@dataclass(frozen=True)
class CalibratedHead:
    temperature: float
    threshold: float
    proba: np.ndarray
    metrics: dict[str, Any]


def calibrate_head(
    logits: np.ndarray,
    y_true: list[str],
    labels: tuple[str, ...],
    target: float,
    *,
    method: str = "point",
    level: float = 0.95,
    margin: float = 0.0,
) -> CalibratedHead:
    """Temperature, then the auto-route threshold for `target` accuracy (chosen by `method`,
    `level` and `margin`: `choose_threshold`), then the metrics, all on the same (validation)
    rows: how every model and variant is calibrated."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index.get(v, -1) for v in y_true])
    temperature = fit_temperature(logits, y)
    proba = softmax(logits, temperature)
    threshold = choose_threshold(
        proba.max(axis=1),
        proba.argmax(axis=1) == y,
        target,
        method=method,
        level=level,
        margin=margin,
    )
    return CalibratedHead(
        temperature, threshold, proba, head_metrics(y_true, proba, labels, threshold)
    )


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of `head_metrics`, as in `evaluate --json`."""
    keys = (
        "accuracy",
        "macro_f1",
        "top3_accuracy",
        "auto_route_coverage",
        "auto_route_accuracy",
        "ece",
    )
    return {k: metrics[k] for k in keys}


def plot_confusion(
    y_true: list[str], y_pred: list[str], labels: list[str], path: Path, title: str
) -> Path:
    """Row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(y_true, y_pred, labels=labels).astype(np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(6.0, 0.38 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    short = [label if len(label) <= 28 else label[:26] + "…" for label in labels]
    ax.set_xticks(range(len(labels)), short, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(bins: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Reliability diagram (calibration curve): accuracy against mean confidence per bin, the
    diagonal a calibrated model follows, and how many rows each bin holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filled = [b for b in bins if b["count"]]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.bar(
        [(b["lo"] + b["hi"]) / 2 for b in filled],
        [b["accuracy"] for b in filled],
        width=[b["hi"] - b["lo"] for b in filled],
        edgecolor="black",
        alpha=0.6,
        label="accuracy in bin",
    )
    top.plot(
        [b["confidence"] for b in filled],
        [b["accuracy"] for b in filled],
        marker="o",
        color="tab:red",
        label="model",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(
        [(b["lo"] + b["hi"]) / 2 for b in bins],
        [b["count"] for b in bins],
        width=[b["hi"] - b["lo"] for b in bins],
        color="tab:blue",
        edgecolor="black",
    )
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("rows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
