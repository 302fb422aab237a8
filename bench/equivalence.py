"""Are the engines the same model? On a transformer directory's own validation rows:

- PyTorch fp32 vs ONNX Runtime fp32 (exported here, in a temporary folder): top-1 agreement of
  the network's heads and of the shipped (mixed, calibrated) probabilities, and the largest
  probability difference;
- ONNX int8 (the shipped engine, which the calibration was fitted on) vs fp32: accuracy and
  macro-F1 of the shipped probabilities, and the calibration (ECE, auto-routed share and its
  accuracy with the stored threshold) on each engine.

    .venv/bin/python bench/equivalence.py --model "$(.venv/bin/aduan models path --preset fast)" \
        [--json bench/results/equivalence.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    from aduan.model.artifacts import read_config
    from aduan.model.classifier import ComplaintClassifier
    from aduan.model.labels import HEADS
    from aduan.model.onnx import OnnxEngine, export_network
    from aduan.model.text import normalize_text
    from aduan.training.config import load_config
    from aduan.training.data import load_splits
    from aduan.training.evaluate import score_rows
    from aduan.training.metrics import summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--months",
        nargs=2,
        metavar=("FROM", "UNTIL"),
        help="rows to measure on (default: the model's validation months); use months the "
        "model never saw for the quality figures, e.g. 2023-02-01 2023-03-31 for the model "
        "bench/outoftime.py trains",
    )
    args = parser.parse_args()
    config = read_config(args.model)
    split = json.loads((args.model / "metrics.json").read_text())["split"]
    if args.months:
        day_before = str(np.datetime64(args.months[0]) - np.timedelta64(1, "D"))
        split = {"train_until": day_before, "valid_from": args.months[0]}
        split["valid_until"] = args.months[1]
    splits, _ = load_splits(load_config(config["preset"], {k: str(v) for k, v in split.items()}))
    rows = splits.valid
    texts = [normalize_text(t) for t in rows["text"]]

    engines = {
        "torch fp32": ComplaintClassifier.load(args.model, engine="torch"),
        "onnx int8": ComplaintClassifier.load(args.model, engine="onnx"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        network = engines["torch fp32"].backend.network
        entry = export_network(network, Path(tmp), "fp32")
        fp32 = ComplaintClassifier.load(args.model, engine="torch")
        fp32.backend.engine = OnnxEngine.from_file(Path(tmp) / entry["file"])
        fp32.backend.engine_name = "onnx"
        engines["onnx fp32"] = fp32
        raw = {name: c.backend.encoder_logits(texts) for name, c in engines.items()}
        proba = {name: c.predict_proba(texts) for name, c in engines.items()}
        scored = {name: score_rows(c, rows)[2] for name, c in engines.items()}
    result: dict[str, Any] = {"model_version": config["model_version"], "rows": len(rows)}
    for a, b in (("torch fp32", "onnx fp32"), ("onnx fp32", "onnx int8")):
        pair: dict[str, Any] = {}
        for head in HEADS:
            pair[head] = {
                "network_top1_agreement": float(
                    (raw[a][head].argmax(1) == raw[b][head].argmax(1)).mean()
                ),
                "shipped_top1_agreement": float(
                    (proba[a][head].argmax(1) == proba[b][head].argmax(1)).mean()
                ),
                "max_probability_difference": float(np.abs(proba[a][head] - proba[b][head]).max()),
            }
        result[f"{a} vs {b}"] = pair
    result["quality"] = {
        name: {head: summary(scores[head]) for head in HEADS} for name, scores in scored.items()
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
