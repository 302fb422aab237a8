"""Dynamic batching benchmark: 16 concurrent single-text clients, batching on vs off.

Starts the real server (`aduan serve`) on a free loopback port for each setting, sends a fixed
number of single-text classify requests from N concurrent clients, and records throughput and
latency. Usage:

    .venv/bin/python bench/batching.py [--model models/default] [--clients 16] [--requests 1600]

Results go to bench/results/batching.json; bench/README.md holds the recorded figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import free_port, wait_ready  # bench/ holds scripts, not a package

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "sampah menumpuk di depan pasar sudah tiga hari tidak diangkut",
    "jukir liar di trotoar Jl. Tunjungan minta uang lima ribu",
    "lampu PJU padam di jalan raya darmo indah gelap rawan",
    "jalan berlubang besar di depan sekolah membahayakan pengendara motor",
    "saluran air tersumbat sehingga banjir setiap hujan deras",
    "bantuan sosial untuk lansia belum cair mohon informasinya",
    "KTP elektronik belum jadi sudah dua bulan",
    "pohon besar di pinggir jalan hampir tumbang mohon dipangkas",
]


async def client_loop(
    client: httpx.AsyncClient,
    url: str,
    count: int,
    offset: int,
    latencies: list[float],
    statuses: list[int],
) -> None:
    for i in range(count):
        body = {"items": [{"text": TEXTS[(offset + i) % len(TEXTS)]}]}
        started = time.perf_counter()
        response = await client.post(url, json=body)
        latencies.append(time.perf_counter() - started)
        statuses.append(response.status_code)


async def load(base: str, clients: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    statuses: list[int] = []
    per_client = requests // clients
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await client_loop(client, f"{base}/v1/classify", 20, 0, [], [])  # warm-up
        started = time.perf_counter()
        await asyncio.gather(
            *(
                client_loop(client, f"{base}/v1/classify", per_client, c, latencies, statuses)
                for c in range(clients)
            )
        )
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": sum(s != 200 for s in statuses),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p95_ms": round(latencies[int(0.95 * len(latencies)) - 1] * 1000, 1),
    }


def run_setting(model: Path, batching: bool, clients: int, requests: int) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        "ADUAN_BATCHING": str(batching).lower(),
        "ADUAN_LOG_LEVEL": "WARNING",
        "ADUAN_QUEUE_SIZE": "100000",
    }
    aduan = Path(sys.executable).with_name("aduan")
    proc = subprocess.Popen(
        [str(aduan), "serve", "--model", str(model), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(port, proc, time.perf_counter(), limit=120)
        return asyncio.run(load(base, clients, requests))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1600)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "batching.json")
    args = parser.parse_args()
    config = json.loads((args.model / "config.json").read_text())
    results = {
        "model_type": config["model_type"],
        "model_version": config["model_version"],
        "clients": args.clients,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "batching_off": run_setting(args.model, False, args.clients, args.requests),
        "batching_on": run_setting(args.model, True, args.clients, args.requests),
    }
    results["speedup"] = round(
        results["batching_on"]["throughput_rps"] / results["batching_off"]["throughput_rps"], 2
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
