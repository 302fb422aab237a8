"""Collect the validation figures of trained model directories into one markdown table.

Train the variants first (commands in bench/quality.md), then:

    .venv/bin/python bench/quality.py models/default models/quick [...]

Every model directory must come from the same split: the script refuses to mix splits. For a
transformer trained with the ablation experiment (`python -m aduan.training.experiments
ablation`), the ablation rows (encoder alone, + routing table, + TF-IDF, + prior correction)
come from metrics.json, measured on the selection run's model and the same validation rows as
its final figures; `aduan train` runs no ablation. `--recompute` runs it on the directory with
the current code (no retraining) instead (a refitted directory has seen the validation months:
optimistic).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

KEYS = ("accuracy", "macro_f1", "top3_accuracy", "auto_route_coverage", "auto_route_accuracy")


def _size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 1e6


def _row(name: str, metrics: dict[str, Any], minutes: str, size: str) -> str:
    cells = []
    for head in ("agency", "category"):
        m = metrics[head]
        cells += [f"{m[k]:.3f}" if isinstance(m.get(k), float) else "–" for k in KEYS]
    return f"| {name} | {' | '.join(cells)} | {minutes} | {size} |"


def table(directories: list[Path], recompute: bool = False) -> str:
    header = (
        "| system | agency acc | agency macro-F1 | agency top-3 | agency auto-routed | "
        "acc. auto | category acc | category macro-F1 | category top-3 | "
        "category auto-routed | acc. auto | training min | size MB |"
    )
    lines = [header, "|" + " --- |" * 13]
    split = None
    for directory in directories:
        metrics = json.loads((directory / "metrics.json").read_text())
        config = json.loads((directory / "config.json").read_text())
        if split is None:
            split = metrics["split"]
        elif metrics["split"] != split:
            raise SystemExit(f"{directory}: split {metrics['split']} differs from {split}")
        minutes = f"{metrics['training_seconds'] / 60:.1f}"
        size = f"{_size_mb(directory):.0f}"
        label = f"`{config['preset']}` ({config['model_type']})"
        variants = metrics.get("validation_variants", {})
        if recompute and config["model_type"] == "aduan-transformer":
            from aduan.training.experiments.ablation import ablate_model_dir

            variants = ablate_model_dir(directory)
        for variant, figures in variants.items():
            lines.append(_row(f"{label}: {variant}", figures, "", ""))
        lines.append(_row(f"**{label}: shipped**", metrics["validation"], minutes, size))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument(
        "--recompute", action="store_true", help="re-run transformer ablations (no retraining)"
    )
    args = parser.parse_args()
    print(table(args.models, args.recompute))


if __name__ == "__main__":
    main()
