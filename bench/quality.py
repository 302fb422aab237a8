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

`--timings DIR` times, in one process on a trained transformer directory's validation rows,
what `aduan train` did before the experiments left it (issue 18) and no longer does: the
ablation's refits of every mixture, the prior-correction search inside the metric-driven mixing,
and the second pass of the network over the validation rows for calibration.
"""

from __future__ import annotations

import argparse
import json
import time
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


def timings(directory: Path) -> dict[str, float]:
    """Seconds of each part of the training path the experiments took out (module docstring)."""
    from aduan.training.experiments.ablation import load_trained, mixture_inputs, variants
    from aduan.training.experiments.priors import fit_mixing_with_priors, log_priors
    from aduan.training.mixing import fit_mixing

    model, splits, config = load_trained(directory)
    target = config.route_accuracy
    out: dict[str, float] = {}

    def timed(name: str, step: Any) -> Any:
        started = time.perf_counter()
        result = step()
        out[name] = round(time.perf_counter() - started, 1)
        return result

    inputs = timed(
        "network pass over the validation rows", lambda: mixture_inputs(model, splits, config)
    )
    raw, tfidf, routes, targets = inputs.raw, inputs.tfidf, inputs.routes, inputs.targets["valid"]
    priors = log_priors(inputs.targets["train"], inputs.labels)
    timed(
        "metric mixing (kept)", lambda: fit_mixing(raw, targets, routes, tfidf, "metrics", target)
    )
    timed(
        "metric mixing with the prior search (before)",
        lambda: fit_mixing_with_priors(raw, targets, routes, tfidf, priors, "metrics", target),
    )
    timed("ablation, every variant refitted (before)", lambda: variants(inputs, splits, target))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument(
        "--recompute", action="store_true", help="re-run transformer ablations (no retraining)"
    )
    parser.add_argument(
        "--timings", action="store_true", help="time what left the training path (no table)"
    )
    args = parser.parse_args()
    if args.timings:
        for directory in args.models:
            print(json.dumps({str(directory): timings(directory)}, indent=1))
        return
    print(table(args.models, args.recompute))


if __name__ == "__main__":
    main()
