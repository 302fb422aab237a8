"""`aduan data stats`: what a labelled file holds, with a class-balance chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from aduan.model.taxonomy import Taxonomy

from .data import ColumnMap, add_labels, load_complaints


def data_stats(
    path: Path | str,
    *,
    columns: ColumnMap | None = None,
    taxonomy: Path | str | None = None,
    chart: Path | None = None,
    top: int = 25,
) -> dict[str, Any]:
    """Rows, classes per head, duplicates and text lengths; writes a class-balance PNG."""
    frame = add_labels(load_complaints(path, columns), Taxonomy.load(taxonomy))
    lengths = frame["text"].str.len()
    duplicated = frame["text"].duplicated(keep=False)
    conflicts = (
        frame[duplicated].groupby("text")[["agency", "category"]].nunique().max(axis=1) > 1
    ).sum()
    stats: dict[str, Any] = {
        "file": str(path),
        "rows": len(frame),
        "period": [str(frame["created_at"].min()), str(frame["created_at"].max())],
        "duplicate_rows": int(frame["text"].duplicated().sum()),
        "duplicate_groups_with_conflicting_labels": int(conflicts),
        "text_length": {
            k: float(v) for k, v in lengths.describe(percentiles=[0.1, 0.5, 0.9, 0.99]).items()
        },
        "classes": {
            head: {str(k): int(v) for k, v in frame[head].value_counts().items()}
            for head in ("category", "agency", "topic")
        },
    }
    chart = chart or Path(f"{Path(path).stem}.classes.png")
    stats["chart"] = str(plot_balance(frame, chart, top))
    return stats


def plot_balance(frame: pd.DataFrame, path: Path, top: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 8))
    for ax, head in zip(axes, ("category", "agency"), strict=True):
        counts = frame[head].value_counts().head(top)[::-1]
        names = [n if len(n) <= 40 else n[:38] + "…" for n in counts.index]
        ax.barh(names, counts.to_numpy(), color="#3b7dd8")
        ax.set_title(f"{head} (top {min(top, frame[head].nunique())} of {frame[head].nunique()})")
        ax.set_xlabel("rows")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"Class balance: {len(frame)} rows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
