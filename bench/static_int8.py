"""Static against dynamic int8 quantisation of the transformer, offline, in one run.

Is the per-call activation scaling of dynamic int8 what a call costs (bench/README.md,
"Serving the transformer")?

Quantises the directory's fp32 `model.onnx` (`aduan export --quantize fp32` on a copy) with
activation ranges calibrated on 48 real complaints (ONNX Runtime `quantize_static`, QOperator
format, MatMul/Gemm, per-channel int8 weights, uint8 activations), then times fp32, dynamic int8
(the shipped `model.int8.onnx`) and static int8 on 192 other complaints in arrival order, 16 at
a time in length buckets and one a call, with each one's agency top-1 agreement with fp32.

    .venv/bin/python bench/static_int8.py --model DIR [--output bench/results/static_int8.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import cpu_model, real_texts  # bench/ holds scripts, not a package

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/static_int8.json")
    args = parser.parse_args()

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from aduan.model.onnx import OnnxEngine
    from aduan.model.transformer import TokenIds, batched_logits, pad_batch

    tokenizer = TokenIds.load(args.model / "encoder", 128)
    texts = real_texts(512)
    calibration = tokenizer(texts[:48])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            if row is None:
                return None
            ids, mask = pad_batch([row], tokenizer.pad_id)
            return {"input_ids": ids, "attention_mask": mask}

    static = args.model / "model.static.onnx"
    quantize_static(
        str(args.model / "model.onnx"),
        str(static),
        Reader(),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    files = {"fp32": "model.onnx", "dynamic int8": "model.int8.onnx", "static int8": static.name}
    engines = {name: OnnxEngine.from_file(args.model / f, 2) for name, f in files.items()}
    order = np.random.default_rng(13).permutation(np.arange(48, len(texts)))[:192]
    ids = tokenizer([texts[i] for i in order])
    batches = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    result: dict[str, Any] = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    reference = None
    for name, engine in engines.items():
        batched_logits(engine, batches[0], tokenizer.pad_id, 32)  # warm-up
        started = time.perf_counter()
        outputs = [batched_logits(engine, b, tokenizer.pad_id, 32) for b in batches]
        bucketed = (time.perf_counter() - started) / len(ids) * 1000
        started = time.perf_counter()
        for row in ids[:64]:
            batched_logits(engine, [row], tokenizer.pad_id, 32)
        single = (time.perf_counter() - started) / 64 * 1000
        agency = np.concatenate([o["agency"] for o in outputs]).argmax(1)
        reference = agency if reference is None else reference
        result[name] = {
            "ms_per_text_16_in_length_buckets": round(bucketed, 2),
            "ms_per_text_one_a_call": round(single, 2),
            "agency_top1_agreement_with_fp32": round(float((agency == reference).mean()), 3),
        }
        print(name, result[name], flush=True)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
