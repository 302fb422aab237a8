"""A backfill of a large archive: single-process `aduan batch` against `aduan batch --engine ray`
(Ray Data, a local Ray instance with this machine's cores) on the same generated file, in one run.

The file repeats the shared Surabaya complaints (text, address; a fresh id per row) until it
holds `--rows` rows (default 216,180 = 20 copies), as Parquet (and CSV with `--csv`), under
`var/bench/` (never in the repository). Each engine runs as its own `aduan batch` process, so
the figures include start-up (and, for Ray, starting the local instance), and the outputs are
checked to be the same rows with the same labels. Runs alternate (single, ray, single, ray ...)
so that whatever else the machine is doing weighs on both alike; the ratio is the figure to
read. Usage:

    .venv/bin/python bench/backfill.py --model models/default [--rows 216180] [--repeats 1] \
        [--output bench/results/backfill.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SURABAYA = Path("surabaya") / "complaints_2022-01_2023-03.csv"


def shared_data() -> Path:
    return Path(os.environ.get("ADUAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def make_archive(rows: int, folder: Path, csv: bool) -> dict[str, Path]:
    """The shared complaints repeated to `rows` rows (Parquet, row groups of 50,000)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"parquet": folder / f"archive-{rows}.parquet"}
    if csv:
        files["csv"] = folder / f"archive-{rows}.csv"
    if all(p.is_file() for p in files.values()):
        return files
    source = pd.read_csv(shared_data() / SURABAYA, usecols=["text", "address"], dtype=str)
    copies = -(-rows // len(source))
    frame = pd.concat([source] * copies, ignore_index=True).iloc[:rows]
    frame.insert(0, "id", [f"a{i}" for i in range(rows)])
    frame.to_parquet(files["parquet"], index=False, row_group_size=50_000)
    if csv:
        frame.to_csv(files["csv"], index=False)
    return files


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else model
    return {
        "platform": f"{platform.machine()}, {os.cpu_count()} cores",
        "cpu": model,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def run_batch(model: Path, source: Path, output: Path, engine: str) -> dict[str, Any]:
    """One `aduan batch` process; wall seconds including start-up."""
    output.unlink(missing_ok=True)
    command = [
        str(ROOT / ".venv" / "bin" / "aduan"),
        "batch",
        "--model",
        str(model),
        "--input",
        str(source),
        "--output",
        str(output),
        "--engine",
        engine,
    ]
    env = {**os.environ, "RAY_DEDUP_LOGS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"aduan batch --engine {engine} failed ({done.returncode})")
    summary = done.stdout.strip().splitlines()[-1]
    classified = int(summary.split(" of ")[0])
    rows = int(summary.split(" of ")[1].split()[0])
    reported = re.search(r"\((\d+) texts/s", summary)
    return {
        "engine": engine,
        "rows": rows,
        "classified": classified,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1),
        # what `aduan batch` reports: from the model loaded (single) or the Ray instance
        # running (ray: the actors' start-up included) to the output written
        "rows_per_s_reported": int(reported.group(1)) if reported else None,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def same_answers(a: Path, b: Path) -> bool:
    columns = ["row", "id", "category", "agency", "route", "route_reason"]
    left = pd.read_parquet(a, columns=columns)
    right = pd.read_parquet(b, columns=columns)
    return bool(left.reset_index(drop=True).equals(right.reset_index(drop=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--rows", type=int, default=216_180)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--csv", action="store_true", help="also time a CSV input")
    parser.add_argument("--scratch", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/backfill.json")
    args = parser.parse_args()

    config = json.loads((args.model / "config.json").read_text())
    result: dict[str, Any] = {
        "model_type": config["model_type"],
        "model_version": config["model_version"],
        "machine": machine(),
        "runs": [],
    }
    files = make_archive(args.rows, args.scratch, args.csv)
    result["rows"] = args.rows
    for kind, source in files.items():
        outputs = {}
        for repeat in range(args.repeats):
            for engine in ("auto", "ray"):
                output = args.scratch / f"out-{engine}.parquet"
                run = run_batch(args.model, source, output, engine)
                run.update(input=kind, repeat=repeat)
                result["runs"].append(run)
                outputs[engine] = output
                print(json.dumps(run), flush=True)
        result[f"same_answers_{kind}"] = same_answers(outputs["auto"], outputs["ray"])
    for kind in files:
        best = {
            engine: max(
                r["rows_per_s"]
                for r in result["runs"]
                if r["engine"] == engine and r["input"] == kind
            )
            for engine in ("auto", "ray")
        }
        result[f"best_rows_per_s_{kind}"] = best
        result[f"ray_over_single_{kind}"] = round(best["ray"] / best["auto"], 2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
