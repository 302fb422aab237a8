"""Inference speed of a transformer model directory, in one run, as ratios (`make bench`).

1. The alternative an ML engineer would write: the same fine-tuned network with plain
   `transformers` (`AutoModel` + `AutoTokenizer` from the directory's encoder folder, mean
   pooling and the heads), one text per call, fp32.
2. Our predictor offline (tokenised once, length-sorted batches): each engine (PyTorch fp32,
   PyTorch bf16, ONNX Runtime fp32, ONNX Runtime int8) at batch 1, 8 and 32.
3. The service over HTTP on loopback (`aduan serve` in its own process): 1, 16 and 64
   concurrent single-text clients, batching on and off, for the transformer and the TF-IDF
   model: requests/s, p50/p99 latency, errors, resident memory, start-up-to-ready time.
4. The compute limit: the network's FLOPs per text at the texts' mean token count, divided by
   this machine's matrix-product rate for each data type (measured here, in this run), and each
   path's share of it.

Texts are real complaints from the shared data at their real lengths. Usage:

    .venv/bin/python bench/perf.py --model models/default --baseline models/baseline \
        [--texts 512] [--requests 400] [--output bench/results/perf.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench/ holds scripts, not a package: the loopback client and server helpers of the load bench
from load import exchange, free_port, request_body, rss_mb, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def real_texts(count: int) -> list[str]:
    """The newest complaints of the shared data (the months a model is validated on)."""
    import pandas as pd

    from aduan.model.resources import default_data
    from aduan.model.text import normalize_text

    frame = pd.read_csv(default_data(), usecols=["text", "created_at"], dtype=str)
    frame = frame.sort_values("created_at").tail(count)
    return [normalize_text(t) for t in frame["text"].fillna("")]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The vector instructions PyTorch dispatches to (AVX2, AVX512, ...)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def matmul_rates(threads: int) -> dict[str, float]:
    """Sustained matrix-product rate (TFLOP/s, TOP/s for int8) of shapes like the network's
    (a batch of 32 texts of 64 tokens times a 384 x 1536 weight)."""
    import torch

    torch.set_num_threads(threads)
    m, k, n = 32 * 64, 384, 1536
    from aduan.training.distributed import bf16_is_fast

    rates = {}
    types = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if bf16_is_fast("cpu") else [])
    for name, dtype in types:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        rates[name] = _rate(lambda a=a, b=b: a @ b, 2 * m * k * n)
    rates["int8"] = _onnx_int8_rate(m, k, n, threads)
    return rates


def _onnx_int8_rate(m: int, k: int, n: int, threads: int) -> float:
    """int8 rate of the kernel the shipped engine runs: ONNX Runtime's MatMulInteger (uint8
    activations x int8 weights, as dynamic quantisation writes it). torch._int_mm is no
    measure of it: without VNNI it falls back to a slow path (0.003 TOP/s on AVX2)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).integers(-127, 127, (k, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "a_zero", "w_zero"], ["y"])],
        "matmul_integer",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero"),
            numpy_helper.from_array(np.zeros(n, dtype=np.int8), "w_zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        onnx.ModelProto.SerializeToString(model), options, providers=["CPUExecutionProvider"]
    )
    a = np.random.default_rng(1).integers(0, 255, (m, k), dtype=np.uint8)
    return _rate(lambda: session.run(None, {"a": a}), 2 * m * k * n)


def _rate(step: Any, flops: int, seconds: float = 2.0) -> float:
    for _ in range(5):
        step()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += 1
    return flops * count / (time.perf_counter() - started) / 1e12


def flops_per_text(config: dict[str, Any], tokens: float) -> float:
    """Forward FLOPs of the encoder for one text of `tokens` tokens (matrix products and
    attention; embeddings, norms and heads are negligible)."""
    hidden = config["hidden_size"]
    ffn = config["intermediate_size"]
    layers = config["num_hidden_layers"]
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn + 2 * tokens * hidden)
    return per_token_layer * tokens * layers


def alternative(model_dir: Path, texts: list[str], max_length: int) -> float:
    """texts/s of plain transformers, one text per call, fp32."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir / "encoder")
    encoder = AutoModel.from_pretrained(model_dir / "encoder").eval()
    heads = load_file(model_dir / "heads.safetensors")

    def one(text: str) -> None:
        batch = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = encoder(**batch).last_hidden_state
            pooled = hidden.mean(1)
            for head in ("category", "agency"):
                pooled @ heads[f"heads.{head}.weight"].T + heads[f"heads.{head}.bias"]

    for text in texts[:5]:
        one(text)
    started = time.perf_counter()
    for text in texts:
        one(text)
    return len(texts) / (time.perf_counter() - started)


def engines(model_dir: Path, texts: list[str], threads: int) -> dict[str, dict[str, float]]:
    """texts/s of each engine at batch 1, 8 and 32 (tokenisation included)."""
    import torch

    from aduan.model.artifacts import read_config
    from aduan.model.network import TorchEngine
    from aduan.model.onnx import OnnxEngine
    from aduan.model.transformer import ONE_CALL, TransformerBackend, batched_logits

    config = read_config(model_dir)
    backend = TransformerBackend.load(model_dir, config, engine="torch", threads=threads)
    torch_fp32 = TorchEngine(backend.network, threads)

    def torch_bf16(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch_fp32(ids, mask)

    from aduan.training.distributed import bf16_is_fast

    onnx = config.get("onnx") or {}
    candidates: dict[str, Any] = {"torch fp32": torch_fp32}
    if bf16_is_fast("cpu"):  # emulated (~100x slower than fp32) on an AVX2-only CPU: skipped
        candidates["torch bf16"] = torch_bf16
    if onnx.get("fp32"):
        candidates["onnx fp32"] = OnnxEngine.from_file(model_dir / onnx["fp32"], threads)
    if onnx.get("int8"):
        candidates["onnx int8"] = OnnxEngine.from_file(model_dir / onnx["int8"], threads)
    tokenizer = backend.tokenizer
    out: dict[str, dict[str, float]] = {}
    for name, engine in candidates.items():
        out[name] = {}
        for size in (1, 8, 32):
            # calls of `size` texts in length order (not cut further: the batch size measured)
            fixed = (ONE_CALL, ONE_CALL)
            batched_logits(engine, tokenizer(texts[:64]), tokenizer.pad_id, size, *fixed)
            started = time.perf_counter()
            batched_logits(engine, tokenizer(texts), tokenizer.pad_id, size, *fixed)
            out[name][f"batch {size}"] = round(len(texts) / (time.perf_counter() - started), 1)
        print(f"  {name}: {out[name]}", flush=True)
    return out


def _busy() -> None:
    while True:
        pass


def contended(model_dir: Path, texts: list[str], threads: int) -> dict[str, dict[str, float]]:
    """ms per text (batch 1) of the ONNX engine with the cores idle and with another process
    keeping one core busy, intra-op threads spinning between runs (ONNX Runtime's default) or
    not (the setting shipped: `session.intra_op.allow_spinning=0`)."""
    import multiprocessing

    import onnxruntime as ort

    from aduan.model.artifacts import read_config
    from aduan.model.onnx import OnnxEngine, session_options
    from aduan.model.transformer import TokenIds, batched_logits

    config = read_config(model_dir)
    path = model_dir / config["onnx"]["file"]
    tokenizer = TokenIds.load(model_dir / "encoder", int(config["max_length"]))
    ids = tokenizer(texts[:96])
    out: dict[str, dict[str, float]] = {}
    for spinning in ("1", "0"):
        options = session_options(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        engine = OnnxEngine(session, [o.name for o in session.get_outputs()])
        name = "spinning" if spinning == "1" else "no spinning (shipped)"
        out[name] = {}
        for load in ("idle", "one core busy"):
            busy = multiprocessing.Process(target=_busy, daemon=True)
            if load != "idle":
                busy.start()
            try:
                batched_logits(engine, ids[:16], tokenizer.pad_id, 1)
                started = time.perf_counter()
                batched_logits(engine, ids, tokenizer.pad_id, 1)
                out[name][load] = round((time.perf_counter() - started) / len(ids) * 1000, 2)
            finally:
                if busy.is_alive():
                    busy.terminate()
        print(f"  {name}: {out[name]}", flush=True)
    return out


async def _load(port: int, texts: list[str], clients: int, requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    per_client = max(1, requests // clients)

    async def client(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(per_client):
            body = request_body(texts[(offset * per_client + i) % len(texts)])
            started = time.perf_counter()
            status, _ = await exchange(reader, writer, body)
            latencies.append(time.perf_counter() - started)
            errors += status != 200
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1),
    }


def serve(
    model_dir: Path, texts: list[str], batching: bool, requests: int, env: dict[str, str]
) -> dict[str, Any]:
    """Start `aduan serve`, measure start-up-to-ready, then each client count in turn."""
    port = free_port()
    settings = {
        **os.environ,
        **env,
        "ADUAN_BATCHING": str(batching).lower(),
        "ADUAN_LOG_LEVEL": "WARNING",
        "ADUAN_QUEUE_SIZE": "100000",
    }
    aduan = Path(sys.executable).with_name("aduan")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(aduan), "serve", "--model", str(model_dir), "--port", str(port)],
        env=settings,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, proc, started)
        ready = time.perf_counter() - started
        result: dict[str, Any] = {"startup_to_ready_s": round(ready, 2)}
        asyncio.run(_load(port, texts, 4, 40))  # warm-up
        result["rss_mb_idle"] = round(rss_mb(proc.pid), 1)
        for clients in (1, 16, 64):
            count = requests if clients > 1 else max(50, requests // 4)
            result[f"{clients} clients"] = asyncio.run(_load(port, texts, clients, count))
            print(f"    {clients} clients: {result[f'{clients} clients']}", flush=True)
        result["rss_mb_after_load"] = round(rss_mb(proc.pid), 1)
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--baseline", type=Path, help="a TF-IDF model directory to serve too")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "perf.json")
    args = parser.parse_args()

    from aduan.model.artifacts import read_config
    from aduan.model.transformer import TokenIds

    config = read_config(args.model)
    texts = real_texts(args.texts)
    tokenizer = TokenIds.load(args.model / "encoder", int(config["max_length"]))
    tokens = float(np.mean([len(x) for x in tokenizer(texts)]))
    result: dict[str, Any] = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "cpu_capability": cpu_capability(),
        "model_version": config["model_version"],
        "encoder_layers": config["encoder_config"]["num_hidden_layers"],
        "texts": len(texts),
        "mean_tokens": round(tokens, 1),
    }
    print("matrix-product rates", flush=True)
    rates = matmul_rates(args.threads)
    result["matmul_tflops"] = {k: round(v, 3) for k, v in rates.items()}
    flops = flops_per_text(config["encoder_config"], tokens)
    result["gflops_per_text"] = round(flops / 1e9, 3)
    limits = {name: rate * 1e12 / flops for name, rate in rates.items()}
    result["compute_limit_texts_per_s"] = {k: round(v, 1) for k, v in limits.items()}
    print("alternative: plain transformers, one text per call", flush=True)
    result["alternative_texts_per_s"] = round(
        alternative(args.model, texts[:128], int(config["max_length"])), 1
    )
    print("engines", flush=True)
    offline = engines(args.model, texts, args.threads)
    result["offline_texts_per_s"] = offline
    dtype = {"torch fp32": "fp32", "torch bf16": "bf16", "onnx fp32": "fp32", "onnx int8": "int8"}
    result["share_of_limit"] = {
        name: round(max(figures.values()) / limits[dtype[name]], 3)
        for name, figures in offline.items()
    }
    best = max(max(f.values()) for f in offline.values())
    result["speedup_over_alternative"] = round(best / result["alternative_texts_per_s"], 1)
    if (config.get("onnx") or {}).get("file"):
        print("threads with a busy core (ms per text, batch 1)", flush=True)
        result["busy_core_ms_per_text"] = contended(args.model, texts, args.threads)
    models = {"transformer": args.model}
    if args.baseline:
        models["tfidf"] = args.baseline
    result["service"] = {}
    settings = {  # name -> (batching, environment)
        "batching on": (True, {}),
        "batching off": (False, {}),
        "batching on, waiting 5 ms to fill a batch": (True, {"ADUAN_BATCH_MAX_WAIT_MS": "5"}),
    }
    for kind, directory in models.items():
        for setting, (batching, env) in settings.items():
            if kind != "transformer" and env:
                continue
            name = f"{kind}, {setting}"
            print(f"  service: {name}", flush=True)
            result["service"][name] = serve(directory, texts, batching, args.requests, env)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
