"""Out-of-time quality: each system is trained as its preset ships (choices made on the months
after its training months, then refitted when the preset says so), one step earlier, and
measured on months no choice has seen:

    train <= 2022-11, choose on 2022-12..2023-01 (refit on <= 2023-01), measure on 2023-02..03

The measured rows are the de-duplicated validation rows of bench/quality.md (1,413): accuracy,
macro-F1, top-3, ECE, and the share routed automatically with the shipped threshold and the
accuracy of those. Every system runs in the same process, one after the other; training minutes
are wall-clock on this machine.

    .venv/bin/python bench/outoftime.py baseline fast [name=preset:key=value,key=value ...] \
        [--json bench/results/outoftime.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from aduan.model.classifier import ComplaintClassifier
from aduan.model.labels import HEADS
from aduan.training.config import load_config
from aduan.training.data import load_splits
from aduan.training.evaluate import score_rows
from aduan.training.metrics import summary
from aduan.training.train import train

MEASURED = {"train_until": "2023-01-31", "valid_from": "2023-02-01", "valid_until": "2023-03-31"}
EARLIER = {"train_until": "2022-11-30", "valid_from": "2022-12-01", "valid_until": "2023-01-31"}
KEYS = ("accuracy", "macro_f1", "top3_accuracy", "ece", "auto_route_coverage")


def parse_system(spec: str) -> tuple[str, str, dict[str, str]]:
    """`name=preset:key=value,key=value`, or just a preset name."""
    head, _, settings = spec.partition(":")
    name, named, preset = head.partition("=")
    if not named:
        name = preset = head
    overrides = dict(item.split("=", 1) for item in settings.split(",") if item)
    return name, preset, overrides


def measure(model_dir: Path, rows: Any) -> dict[str, Any]:
    """The model's stored temperatures and thresholds, applied to `rows`."""
    _, _, scores = score_rows(ComplaintClassifier.load(model_dir), rows)
    return {head: summary(scores[head]) for head in HEADS}


def row(name: str, figures: dict[str, Any], minutes: float) -> str:
    a = figures["agency"]
    auto = a["auto_route_accuracy"]
    cells = [f"{a[k]:.3f}" for k in KEYS[:4]]
    cells += [f"{a['auto_route_coverage']:.1%}", "–" if auto is None else f"{auto:.3f}"]
    return f"| {name} | {' | '.join(cells)} | {minutes:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("systems", nargs="+", help="preset, or name=preset:key=value,...")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="keep the trained directories here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    first = parse_system(args.systems[0])[1]
    measured_rows, _ = load_splits(load_config(first, MEASURED))
    results: dict[str, Any] = {"measured_rows": len(measured_rows.valid), "systems": {}}
    lines = [
        "| system (agency head) | acc | macro-F1 | top-3 | ECE | auto-routed | acc. when auto "
        "| training min |",
        "|" + " --- |" * 8,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for spec in args.systems:
            name, preset, overrides = parse_system(spec)
            config = load_config(preset, {**EARLIER, **overrides})
            model_dir = root / name
            started = time.perf_counter()
            train(config, model_dir)
            minutes = (time.perf_counter() - started) / 60
            figures = measure(model_dir, measured_rows.valid)
            results["systems"][name] = {
                "preset": preset,
                "overrides": overrides,
                "training_minutes": round(minutes, 2),
                **figures,
            }
            lines.append(row(name, figures, minutes))
            print(lines[-1], flush=True)
    print(f"\nMeasured on {results['measured_rows']} rows, 2023-02..03\n")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
