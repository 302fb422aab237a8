"""The HTTP service with the model in-process against `--engine ray` (Ray Serve replicas), in one
run: 16 concurrent single-text clients against the real `aduan serve` process on loopback, the
same request count for each; throughput, latency, errors and start-up-to-ready time. Usage:

    .venv/bin/python bench/ray_serve.py [--model models/default] [--replicas 2] \
        [--clients 16] [--requests 1600] [--output bench/results/ray_serve.json]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import load  # bench/ holds scripts, not a package
from load import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def run(model: Path, engine: str, replicas: int, clients: int, requests: int) -> dict:
    port = free_port()
    env = {
        **os.environ,
        "ADUAN_LOG_LEVEL": "WARNING",
        "ADUAN_QUEUE_SIZE": "100000",
        "ADUAN_DATA_DIR": str(ROOT / "var" / "bench"),
    }
    aduan = Path(sys.executable).with_name("aduan")
    command = [str(aduan), "serve", "--model", str(model), "--port", str(port)]
    command += ["--engine", engine] + (["--replicas", str(replicas)] if engine == "ray" else [])
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(port, proc, started)
        ready = time.perf_counter() - started
        result = asyncio.run(load(base, clients, requests))
        return {"engine": engine, "startup_to_ready_s": round(ready, 1), **result}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1600)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/ray_serve.json")
    args = parser.parse_args()
    config = json.loads((args.model / "config.json").read_text())
    results = {
        "model_type": config["model_type"],
        "model_version": config["model_version"],
        "clients": args.clients,
        "replicas": args.replicas,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "single_process": run(args.model, "auto", 0, args.clients, args.requests),
        "ray_serve": run(args.model, "ray", args.replicas, args.clients, args.requests),
    }
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["ray_over_single"] = round(
        results["ray_serve"]["throughput_rps"] / results["single_process"]["throughput_rps"], 2
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
