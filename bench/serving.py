"""Where the served transformer loses time, offline, in one run (bench/README.md, "Serving the
transformer"): batches as the service forms them (texts in arrival order, not sorted by length),
run each way the service could run them, and the pipeline's other parts per text.

1. Engine, per text, for batches of 1, 4, 8 and 16 texts drawn in arrival order: one call per
   text; one batch padded to its longest text (the service before length buckets); length
   buckets (`length_buckets`, the service now); with 2 intra-op threads and with 1.
2. What a text costs by call size (16-128 tokens, 1-16 texts a call: on AVX2 int8, more in a
   bigger call); two batches at once on one 1-thread session (one worker per core).
3. The rest of a request's model work per text: tokenising, the TF-IDF part, mixing and the
   whole `Pipeline.run` (location resolution included), at batch 16.

With `--service SECONDS`, instead: the real `aduan serve` on loopback on default settings,
16 closed-loop single-text clients (real texts; a 429 waits its Retry-After), one server per
variant running side by side, the load moved between them every SECONDS for `--rounds`
rounds: before (one padded call per batch), batching off, now (length buckets), now with one
intra-op thread, now with two workers of one thread each. Usage:

    .venv/bin/python bench/serving.py --model DIR [--texts 256] [--output FILE.json]
    .venv/bin/python bench/serving.py --model DIR --service 10 --rounds 3 [--output FILE.json]
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
from load import closed_loop, free_port, rss_mb, wait_ready  # bench/: scripts, not a package
from perf import cpu_model, real_texts

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> environment of `aduan serve` (everything else default)
    "before: batching on, one call padded to the longest text": {"ADUAN_LENGTH_BUCKETS": "false"},
    "batching off": {"ADUAN_BATCHING": "false"},
    "now: batching on, length buckets": {},
    "now, 1 intra-op thread": {"ADUAN_THREADS": "1"},
    "now, 2 workers of 1 thread": {"ADUAN_INFERENCE_WORKERS": "2"},
}


def per_text_ms(step: Any, batches: list[Any], texts: int) -> float:
    step(batches[0])  # warm-up (first-call allocation)
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    return round((time.perf_counter() - started) / texts * 1000, 2)


def start(model_dir: Path, env: dict[str, str]) -> tuple[Any, int]:
    """`aduan serve` with `env` over the defaults, on a free port, once ready."""
    import subprocess

    port = free_port()
    settings = {**os.environ, "ADUAN_LOG_LEVEL": "WARNING", **env}
    aduan = Path(sys.executable).with_name("aduan")
    command = [str(aduan), "serve", "--model", str(model_dir), "--port", str(port)]
    proc = subprocess.Popen(
        command, env=settings, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(port, proc, time.perf_counter())
    return proc, port


def service(
    model_dir: Path, texts: list[str], seconds: float, rounds: int, only: int = 0
) -> dict[str, Any]:
    """Every variant's server runs side by side (idle but one); the load moves from one to the
    next each `seconds`, for `rounds` rounds, so a spell of other work on the machine falls on
    all of them alike. Per variant: the answers over all its slots, and each slot's rate."""
    import asyncio

    from load import Tally

    result: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    chosen = list(VARIANTS.items())[: only or None]
    servers = {name: start(model_dir, env) for name, env in chosen}
    try:
        for _, port in servers.values():
            asyncio.run(closed_loop(port, texts, 4, 5.0))  # warm-up
        tallies = {name: Tally() for name in servers}
        slots: dict[str, list[float]] = {name: [] for name in servers}
        busy: dict[str, float] = dict.fromkeys(servers, 0.0)
        for _ in range(rounds):
            for name, (_, port) in servers.items():
                started = time.perf_counter()
                tally = asyncio.run(closed_loop(port, texts, 16, seconds))
                elapsed = time.perf_counter() - started
                busy[name] += elapsed
                slots[name].append(round(sum(tally.statuses.values()) / elapsed, 1))
                merged = tallies[name]
                merged.latencies += tally.latencies
                merged.errors += tally.errors
                for status, count in tally.statuses.items():
                    merged.statuses[status] = merged.statuses.get(status, 0) + count
        for name, (proc, _) in servers.items():
            summary = tallies[name].summary(busy[name])
            summary["slot_requests_per_s"] = slots[name]
            summary["rss_mb_after"] = round(rss_mb(proc.pid), 1)
            result[name] = summary
            print(f"{name}: {summary}", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(timeout=30)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/serving.json")
    parser.add_argument("--service", type=float, default=0.0, help="seconds per slot")
    parser.add_argument("--rounds", type=int, default=3, help="slots per variant (--service)")
    parser.add_argument("--variants", type=int, default=0, help="only the first N (--service)")
    args = parser.parse_args()
    if args.service:
        out = {
            "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
            "clients": 16,
            "seconds_per_slot": args.service,
            "rounds": args.rounds,
            **service(args.model, real_texts(args.texts), args.service, args.rounds, args.variants),
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1) + "\n")
        return

    from aduan.model.artifacts import read_config
    from aduan.model.onnx import OnnxEngine
    from aduan.model.pipeline import Pipeline
    from aduan.model.transformer import ONE_CALL, TokenIds, batched_logits, length_buckets

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
    padding: dict[str, dict[str, float]] = {}
    for size in sizes:
        batches = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]
        count = len(batches) * size
        row: dict[str, float] = {}
        for threads, engine in engines.items():

            def padded(batch: list[list[int]], engine: Any = engine) -> None:
                batched_logits(engine, batch, pad, 32, ONE_CALL, ONE_CALL)

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
            padding[f"batch {size}"] = {
                "one padded batch": round(one / real, 2),
                "length buckets": round(split / real, 2),
            }
        engine_ms[f"batch {size}"] = row
        print(f"batch {size}: {row}", flush=True)
    result["engine_ms_per_text"] = engine_ms
    result["padded_positions_per_real_token"] = padding

    # What a text costs by call size: synthetic ids of one length, n to a call (2 threads).
    grid: dict[str, dict[str, float]] = {}
    for length in (16, 32, 64, 128):
        row = {}
        for rows in (1, 2, 4, 16):
            call = rng.integers(5, 1000, size=(rows, length)).astype(np.int64)
            mask = np.ones_like(call)
            engines[2](call, mask)
            repeats = max(2, 640 // (rows * length))
            started = time.perf_counter()
            for _ in range(repeats):
                engines[2](call, mask)
            seconds = (time.perf_counter() - started) / repeats / rows
            row[f"{rows} a call"] = round(seconds * 1000, 2)
        grid[f"{length} tokens"] = row
        print(f"{length} tokens: {row}", flush=True)
    result["ms_per_text_by_call_size"] = grid

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
    tfidf = getattr(pipeline.classifier.backend, "tfidf", None)
    logits = pipeline.classifier.backend.logits
    batches_text = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
    count = len(batches_text) * size
    parts = {
        "tokenise": lambda b: tokenizer(b),
        "tfidf part": lambda b: tfidf.logits(b) if tfidf else None,
        "network + mix (logits)": lambda b: logits(b),
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
