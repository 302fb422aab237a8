"""The deadline (resolution-bucket) predictor measured out of time against the agency baseline:

    train <= 2022-12, choose C and the temperature on 2023-01, measure on 2023-02..03

Rows: complaints with a `response_days` bucket, repeated texts kept once (first seen). Systems:
the text model (TF-IDF of the text + one-hot agency class, kecamatan, kelurahan; logistic
regression, temperature-scaled), the agency baseline (the agency's bucket frequencies on the
training months) and the agency's median bucket as a point rule. Figures: accuracy, macro-F1,
log-loss, top-label ECE with its reliability table, per-bucket mean probability against the
observed share, and the mean absolute error of `expected_hours` (hours) against the true
bucket's hours.

    .venv/bin/python bench/deadlines.py [--data FILE] [--json bench/results/deadlines.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from aduan.model.history import load_history
from aduan.model.resources import default_data
from aduan.training.deadlines import fit_deadlines

SYSTEMS = {
    "model": "TF-IDF text + agency + unit, logistic regression",
    "baseline": "agency's bucket frequencies (shipped default unless beaten)",
    "agency_median": "agency's median bucket (point rule)",
}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| system | accuracy | macro-F1 | log-loss | ECE | expected-hours MAE (h) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in SYSTEMS.items():
        f = results[name]
        lines.append(
            f"| {label} | {f['accuracy']:.3f} | {f['macro_f1']:.3f} | {f['log_loss']:.3f} "
            f"| {f['ece']:.3f} | {f['expected_hours_mae']:.1f} |"
        )
    return "\n".join(lines)


def calibration(results: dict[str, Any]) -> str:
    lines = ["| system | " + " | ".join(results["model"]["buckets"]) + " |"]
    lines.append("| --- |" + " --- |" * len(results["model"]["buckets"]))
    for name in ("model", "baseline"):
        cells = [
            f"{b['mean_probability']:.3f} vs {b['observed_share']:.3f}"
            for b in results[name]["buckets"].values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    fitted = fit_deadlines(load_history(args.data or default_data()), refit=False)
    metrics = {**fitted.metrics, "seconds": round(time.perf_counter() - started, 1)}
    print(f"\nMeasured on {metrics['rows']['test']} rows, {metrics['months']['test_from']}.."
          f"{metrics['months']['test_until']}; default: {metrics['default']}\n")  # fmt: skip
    print(table(metrics["test"]))
    print("\nMean predicted probability vs observed share per bucket:\n")
    print(calibration(metrics["test"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=1) + "\n")


if __name__ == "__main__":
    main()
