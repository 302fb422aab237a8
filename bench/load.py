"""Sustained load, then overload, against the real `aduan serve` on loopback (RELIABILITY.md).

For each model directory given:

1. start `aduan serve` and wait until ready (start-up time);
2. warm up (the highest client count, `--warmup` s) and read the server's resident memory (RSS);
3. closed loop: 16, then 64 concurrent clients, each sending one single-text
   `POST /v1/classify` after another for `--duration` s (after a 429 a client waits the
   Retry-After it was given): requests, answers by status, errors
   (anything but 200 and a 429 with Retry-After, transport errors and timeouts included),
   p50/p99 latency, requests/s, and RSS sampled every second;
4. overload: requests arrive at `--overload` times the best closed-loop rate (open loop:
   arrivals do not wait for answers, nor honour Retry-After; a pooled keep-alive connection
   the server has just closed is retried once, as HTTP clients do) for
   `--overload-duration` s; the service must shed the
   excess with 429 + Retry-After, answer the rest within its queue budget, and let nothing
   time out;
5. RSS growth from after warm-up to the end, in percent.

Loopback only; every loop is bounded in time and count. Texts are real complaints from the
shared data when present, else synthetic ones. Usage:

    .venv/bin/python bench/load.py --model models/default [--model models/quick] \
        [--duration 60] [--output bench/results/load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIENT_TIMEOUT_S = 30.0
MAX_OPEN_CONNECTIONS = 1024
IDLE_REUSE_S = 2.0
_WORDS = [
    "sampah",
    "menumpuk",
    "lampu",
    "PJU",
    "padam",
    "jalan",
    "rusak",
    "berlubang",
    "parkir",
    "liar",
    "trotoar",
    "saluran",
    "air",
    "banjir",
    "bansos",
    "belum",
    "cair",
    "pelayanan",
    "kelurahan",
    "lambat",
    "pohon",
    "tumbang",
    "kabel",
    "menjuntai",
]


def texts(count: int) -> list[str]:
    """Real complaints (the newest of the shared data) or, without it, synthetic ones."""
    try:
        import pandas as pd

        from aduan.model.resources import default_data

        frame = pd.read_csv(default_data(), usecols=["text", "created_at"], dtype=str)
        found = frame.sort_values("created_at")["text"].dropna().tail(count).tolist()
        if found:
            return found
    except Exception:
        pass
    rng = random.Random(13)
    return [" ".join(rng.choices(_WORDS, k=rng.randint(5, 40))) for _ in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Tally:
    """Answers of one phase."""

    def __init__(self) -> None:
        self.latencies: list[float] = []  # of 200s
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.shed_without_retry_after = 0
        self.not_sent = 0  # the load generator itself at its connection limit

    def add(self, status: int, seconds: float, headers: dict[str, str]) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies.append(seconds)
        elif status == 429:
            if not headers.get("retry-after", "").isdigit():
                self.shed_without_retry_after += 1
                self.errors.append("429 without Retry-After")
        else:
            self.errors.append(f"status {status}")

    def summary(self, elapsed: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        total = sum(self.statuses.values()) + sum(1 for e in self.errors if e.startswith("x "))

        def pct(p: float) -> float | None:
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        return {
            "requests": total,
            "ok": self.statuses.get(200, 0),
            "shed_429": self.statuses.get(429, 0),
            "errors": len(self.errors),
            "not_sent_generator_limit": self.not_sent,
            "error_kinds": sorted(set(self.errors))[:10],
            "requests_per_s": round(total / elapsed, 1),
            "ok_per_s": round(self.statuses.get(200, 0) / elapsed, 1),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(1000 * lat[-1], 1) if lat else None,
        }


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, dict[str, str]]:
    writer.write(
        b"POST /v1/classify HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed without an answer")
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new loopback connection, given up after CLIENT_TIMEOUT_S like a request."""
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), CLIENT_TIMEOUT_S)


def request_body(text: str) -> bytes:
    return json.dumps({"items": [{"text": text}]}).encode()


async def closed_loop(port: int, corpus: list[str], clients: int, seconds: float) -> Tally:
    """`clients` connections, each sending its next request when the last is answered."""
    tally = Tally()
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        i = number
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = await connect(port)
                status, headers = await asyncio.wait_for(
                    exchange(*connection, request_body(corpus[i % len(corpus)])),
                    CLIENT_TIMEOUT_S,
                )
            except Exception as exc:  # timeouts, refused and broken connections are errors
                tally.errors.append(f"x {type(exc).__name__}")
                if connection is not None:
                    connection[1].close()
                connection = None
                await asyncio.sleep(0.01)  # a refused connection must not spin the loop
                continue
            tally.add(status, time.perf_counter() - started, headers)
            if headers.get("connection") == "close":
                connection[1].close()
                connection = None
            if status == 429:  # a well-behaved client waits as told
                pause = float(headers.get("retry-after", "1") or 1)
                await asyncio.sleep(min(pause, max(0.0, deadline - time.perf_counter())))
            i += clients
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(client(c) for c in range(clients)))
    return tally


async def open_loop(port: int, corpus: list[str], rate: float, seconds: float) -> Tally:
    """Requests arrive every 1/`rate` s whatever the answers; idle keep-alive connections
    are reused, new ones opened up to MAX_OPEN_CONNECTIONS (beyond: counted as an error of
    the load generator, reported separately)."""
    tally = Tally()
    # (reader, writer, when it went idle); the server closes keep-alive connections idle for
    # 5 s (uvicorn's default), so older ones are dropped rather than reused
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    open_count = 0
    tasks: set[asyncio.Task[None]] = set()

    def take() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        nonlocal open_count
        while idle:
            reader, writer, since = idle.pop()
            if time.perf_counter() - since < IDLE_REUSE_S:
                return reader, writer
            writer.close()
            open_count -= 1
        return None

    async def one(i: int) -> None:
        nonlocal open_count
        reused = take()
        if reused is None:
            open_count += 1
            try:
                reader, writer = await connect(port)
            except Exception as exc:  # refused or timed out: an error, and no connection held
                tally.errors.append(f"x {type(exc).__name__}")
                open_count -= 1
                return
        else:
            reader, writer = reused
        started = time.perf_counter()
        body = request_body(corpus[i % len(corpus)])
        try:
            try:
                status, headers = await asyncio.wait_for(
                    exchange(reader, writer, body), CLIENT_TIMEOUT_S
                )
            except (ConnectionError, asyncio.IncompleteReadError):
                if reused is None:
                    raise
                # a pooled connection the server had just closed: what HTTP clients retry
                writer.close()
                reader, writer = await connect(port)
                started = time.perf_counter()
                status, headers = await asyncio.wait_for(
                    exchange(reader, writer, body), CLIENT_TIMEOUT_S
                )
        except Exception as exc:
            tally.errors.append(f"x {type(exc).__name__}")
            writer.close()
            open_count -= 1
            return
        tally.add(status, time.perf_counter() - started, headers)
        if headers.get("connection") == "close":
            writer.close()
            open_count -= 1
        else:
            idle.append((reader, writer, time.perf_counter()))

    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
        if open_count >= MAX_OPEN_CONNECTIONS and not idle:
            tally.not_sent += 1
        else:
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT_S + 5)
    for _, writer, _ in idle:
        writer.close()
    return tally


def run_model(
    model: Path,
    corpus: list[str],
    duration: float,
    warmup: float,
    overload: float,
    overload_duration: float,
    clients: list[int],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    port = free_port()
    aduan = Path(sys.executable).with_name("aduan")
    settings = {**os.environ, "ADUAN_LOG_LEVEL": "WARNING", **(env or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(aduan), "serve", "--model", str(model), "--port", str(port)],
        env=settings,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict[str, Any] = {"model": str(model)}
    try:
        wait_ready(port, proc, started)
        result["startup_to_ready_s"] = round(time.perf_counter() - started, 2)
        # warm up at the highest concurrency: buffers and arenas reach their working size
        asyncio.run(closed_loop(port, corpus, max(clients), warmup))
        base = rss_mb(proc.pid)
        result["rss_mb_after_warmup"] = round(base, 1)
        peak = base
        best = 0.0
        for count in clients:
            tally, peak_phase = _sampled(proc.pid, closed_loop(port, corpus, count, duration))
            summary = tally.summary(duration)
            peak = max(peak, peak_phase)
            best = max(best, summary["ok_per_s"])
            result[f"{count}_clients"] = summary
            print(f"  {count} clients: {summary}", flush=True)
        rate = overload * best
        tally, peak_phase = _sampled(proc.pid, open_loop(port, corpus, rate, overload_duration))
        peak = max(peak, peak_phase)
        result["overload"] = {"factor": overload, "offered_per_s": round(rate, 1)}
        result["overload"].update(tally.summary(overload_duration))
        print(f"  overload x{overload}: {result['overload']}", flush=True)
        end = rss_mb(proc.pid)
        result["rss_mb_end"] = round(end, 1)
        result["rss_mb_peak"] = round(peak, 1)
        result["rss_growth_pct"] = round(100 * (end - base) / base, 1)
        result["rss_peak_growth_pct"] = round(100 * (peak - base) / base, 1)
    finally:
        proc.terminate()
        try:
            result["exit_code"] = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            result["exit_code"] = "killed"
    return result


def _sampled(pid: int, work: Any) -> tuple[Any, float]:
    """Run a load phase while sampling the server's RSS every second; (result, peak MB)."""

    async def both() -> tuple[Any, float]:
        peak = rss_mb(pid)
        task = asyncio.ensure_future(work)
        while not task.done():
            await asyncio.wait([task], timeout=1.0)
            peak = max(peak, rss_mb(pid))
        return task.result(), peak

    return asyncio.run(both())


def wait_ready(port: int, proc: subprocess.Popen, started: float, limit: float = 180.0) -> None:
    """Until the server started at `started` (perf_counter) answers readiness; exits when it
    died or took longer than `limit` seconds."""
    import urllib.request

    while True:
        if proc.poll() is not None or time.perf_counter() - started > limit:
            raise SystemExit(f"server did not start (exit {proc.returncode})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready") as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per client count")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--overload", type=float, default=4.0, help="x the best measured rate")
    parser.add_argument("--overload-duration", type=float, default=30.0)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    corpus = texts(args.texts)
    result: dict[str, Any] = {"machine": machine(), "duration_s": args.duration, "runs": []}
    for model in args.model:
        print(f"{model}", flush=True)
        result["runs"].append(
            run_model(
                model,
                corpus,
                args.duration,
                args.warmup,
                args.overload,
                args.overload_duration,
                [int(c) for c in args.clients.split(",")],
            )
        )
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
