"""Where the served transformer loses time, offline, in one run (bench/README.md, "Serving the
transformer"): batches as the service forms them (texts in arrival order, not sorted by length),
run each way the service could run them, and the pipeline's other parts per text.

1. Engine, per text, for batches of 1, 4, 8 and 16 texts drawn in arrival order: one call per
   text; one batch padded to its longest text (the service before length buckets); length
   buckets (`length_buckets`, the service now); with 2 intra-op threads and with 1.
2. Two batches at once on two 1-thread sessions of the same file (one worker per core).
3. The rest of a request's model work per text: tokenising, the TF-IDF part, mixing and the
   whole `Pipeline.run` (location resolution included), at batch 16.

Usage:

    .venv/bin/python bench/serving.py --model DIR [--texts 256] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import cpu_model, real_texts  # bench/ holds scripts, not a package

ROOT = Path(__file__).resolve().parents[1]
ONE_BATCH = 1e12  # a call overhead no split can beat: the whole batch in one call


def per_text_ms(step: Any, batches: list[Any], texts: int) -> float:
    step(batches[0])  # warm-up (first-call allocation)
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    return round((time.perf_counter() - started) / texts * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/serving.json")
    args = parser.parse_args()

    from aduan.model.artifacts import read_config
    from aduan.model.onnx import OnnxEngine
    from aduan.model.pipeline import Pipeline
    from aduan.model.transformer import TokenIds, batched_logits, length_buckets

    config = read_config(args.model)
    texts = real_texts(args.texts)
    rng = np.random.default_rng(13)
    order = rng.permutation(len(texts))  # arrival order: lengths mixed
    texts = [texts[i] for i in order]
    tokenizer = TokenIds.load(args.model / "encoder", int(config["max_length"]))
    ids = tokenizer(texts)
    pad = tokenizer.pad_id
    result: dict[str, Any] = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "model": str(args.model),
        "encoder_layers": config["encoder_config"]["num_hidden_layers"],
        "texts": len(texts),
        "mean_tokens": round(float(np.mean([len(x) for x in ids])), 1),
    }
    engines = {t: OnnxEngine.load(args.model, config, t) for t in (2, 1)}
    sizes = (1, 4, 8, 16)
    engine_ms: dict[str, dict[str, float]] = {}
    padding: dict[str, float] = {}
    for size in sizes:
        batches = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]
        count = len(batches) * size
        row: dict[str, float] = {}
        for threads, engine in engines.items():

            def padded(batch: list[list[int]], engine: Any = engine) -> None:
                batched_logits(engine, batch, pad, 32, ONE_BATCH)

            def bucketed(batch: list[list[int]], engine: Any = engine) -> None:
                batched_logits(engine, batch, pad, 32)

            if size == 1:
                row[f"{threads} threads"] = per_text_ms(padded, batches, count)
                continue
            row[f"one padded batch, {threads} threads"] = per_text_ms(padded, batches, count)
            row[f"length buckets, {threads} threads"] = per_text_ms(bucketed, batches, count)
        if size > 1:
            real = sum(len(x) for b in batches for x in b)
            one = sum(len(b) * max(len(x) for x in b) for b in batches)
            split = sum(
                len(r) * max(len(b[i]) for i in r)
                for b in batches
                for r in length_buckets([len(x) for x in b], 32)
            )
            padding[f"batch {size}"] = {  # type: ignore[assignment]
                "one padded batch": round(one / real, 2),
                "length buckets": round(split / real, 2),
            }
        engine_ms[f"batch {size}"] = row
        print(f"batch {size}: {row}", flush=True)
    result["engine_ms_per_text"] = engine_ms
    result["padded_positions_per_real_token"] = padding

    # Two workers, one intra-op thread each, two batches of 16 at once on one shared session.
    size = 16
    batches = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]
    one_thread = engines[1]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda b: batched_logits(one_thread, b, pad, 32), batches[:2]))
        started = time.perf_counter()
        list(pool.map(lambda b: batched_logits(one_thread, b, pad, 32), batches))
        two = (time.perf_counter() - started) / (len(batches) * size) * 1000
    result["two_workers_1_thread_batch_16_ms_per_text"] = round(two, 2)
    print(f"two workers: {two:.2f} ms a text", flush=True)

    pipeline = Pipeline.load(args.model, None, "onnx", 2)
    backend = pipeline.classifier.backend
    batches_text = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
    count = len(batches_text) * size
    parts = {
        "tokenise": lambda b: tokenizer(b),
        "tfidf part": lambda b: backend.tfidf.logits(b) if backend.tfidf else None,
        "network + mix (logits)": lambda b: backend.logits(b),
        "whole pipeline.run": lambda b: pipeline.run([(t, None) for t in b]),
    }
    result["parts_ms_per_text_batch_16"] = {
        name: per_text_ms(step, batches_text, count) for name, step in parts.items()
    }
    print(result["parts_ms_per_text_batch_16"], flush=True)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
