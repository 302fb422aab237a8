"""Out-of-time check of the baseline's calibration and of `refit_all`.

Everything in bench/quality.md fits temperatures and thresholds on the months it reports on.
Here they are chosen one step earlier and the figures measured on months no choice has seen:

  A. train <= 2022-11, calibrate on 2022-12..2023-01, measure on 2023-02..03
  B. as A, then `refit_all` (weights refitted on every row <= 2023-01), measured on 2023-02..03
  C. the shipped recipe: train <= 2023-01, calibrate *and* measure on 2023-02..03 (optimistic)

The measured rows are the de-duplicated validation rows of bench/quality.md (1,413).

    .venv/bin/python bench/refit.py [--preset baseline] [--json bench/results/refit.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from aduan.model.classifier import ComplaintClassifier
from aduan.model.labels import HEADS
from aduan.training.config import load_config
from aduan.training.data import load_splits
from aduan.training.evaluate import score_rows
from aduan.training.metrics import summary
from aduan.training.train import train

TEST = {"train_until": "2023-01-31", "valid_from": "2023-02-01", "valid_until": "2023-03-31"}
EARLIER = {"train_until": "2022-11-30", "valid_from": "2022-12-01", "valid_until": "2023-01-31"}


def measure(model_dir: Path, rows: Any) -> dict[str, Any]:
    """The model's stored temperatures and thresholds, applied to `rows`."""
    _, _, scores = score_rows(ComplaintClassifier.load(model_dir), rows)
    return {head: summary(scores[head]) for head in HEADS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="baseline")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    test_config = load_config(args.preset, TEST)
    test_rows, _ = load_splits(test_config)
    results: dict[str, Any] = {"test_rows": len(test_rows.valid)}
    with tempfile.TemporaryDirectory() as tmp:
        systems = {
            "A: train <= 2022-11, calibrated on 2022-12..2023-01": (EARLIER, False),
            "B: A + refit_all (weights refitted on rows <= 2023-01)": (EARLIER, True),
            "C: train <= 2023-01, calibrated on the measured months": (TEST, False),
        }
        for name, (split, refit) in systems.items():
            config = load_config(args.preset, {**split, "refit_all": str(refit)})
            model_dir = Path(tmp) / name[0]
            train(config, model_dir)
            results[name] = measure(model_dir, test_rows.valid)
    header = "| system | acc | macro-F1 | top-3 | auto-routed | acc. when auto |"
    print(f"Measured on {results['test_rows']} rows, 2023-02..03, agency head\n")
    print(header + "\n| --- | --- | --- | --- | --- | --- |")
    for name, figures in results.items():
        if name == "test_rows":
            continue
        a = figures["agency"]
        print(
            f"| {name} | {a['accuracy']:.3f} | {a['macro_f1']:.3f} | {a['top3_accuracy']:.3f} "
            f"| {a['auto_route_coverage']:.3f} | {a['auto_route_accuracy']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
