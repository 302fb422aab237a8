"""What the duplicate search adds to intake as the store grows: 10,000 and 100,000 stored open
complaints, on SQLite and PostgreSQL.

Each store is filled with open complaints spread evenly over `--days` days and the 155
kelurahan of Surabaya (a signature each: a random unit vector, as the search's cost does not
depend on the words), then `--calls` intakes are timed one after the other, as the service
runs them in a database thread: store the complaint (`Store.save_requests`), then its
signature and the search (`duplicates.record`: the vector, the candidate rows of its unit in
the window, the cosines). Reported: the median and 95th percentile of the two together and of
the search alone, and how many candidate rows the search read.

Usage:

    .venv/bin/python bench/duplicates_cost.py [--sizes 10000 100000] [--calls 200]
        [--postgres postgresql+psycopg://127.0.0.1:5432/test]

Writes bench/results/duplicates_cost.json; the figures are recorded in docs/duplicates.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from aduan.service import duplicates
from aduan.service.storage import NewRequest, Store, make_engine, upgrade, utcnow

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "duplicates_cost.json"
UNITS = 155
CHUNK = 5000


def _units() -> list[tuple[str, str]]:
    return [(f"Kelurahan {i}", f"Kecamatan {i % 31}") for i in range(UNITS)]


def _random_vectors(rng: np.random.Generator, count: int) -> list[bytes]:
    raw = rng.standard_normal((count, duplicates.DIMENSIONS)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    return [row.astype(np.float16).tobytes() for row in raw]


def fill(store: Store, size: int, days: int, seed: int = 23) -> None:
    """`size` open complaints with signatures, received over the last `days` days."""
    rng = np.random.default_rng(seed)
    units = _units()
    now = utcnow()
    for start in range(0, size, CHUNK):
        count = min(CHUNK, size - start)
        blobs, places = (_random_vectors(rng, count) for _ in range(2))
        requests, signatures = [], []
        for i in range(count):
            kel, kec = units[int(rng.integers(UNITS))]
            at = now - timedelta(seconds=float(rng.uniform(0, days * 86400)))
            rid = str(uuid.uuid4())
            requests.append(
                {
                    "id": rid,
                    "received_at": at,
                    "text": "x",
                    "category": "SAMPAH",
                    "category_score": 0.9,
                    "agency": "Dinas Lingkungan Hidup",
                    "agency_score": 0.9,
                    "model_version": "bench",
                    "route": "auto",
                    "kelurahan": kel,
                    "kecamatan": kec,
                    "status": "open",
                }
            )
            signatures.append(
                {
                    "request_id": rid,
                    "received_at": at,
                    "kelurahan": kel,
                    "kecamatan": kec,
                    "category": "SAMPAH",
                    "vector_kind": duplicates.VECTOR_KIND,
                    "vector": blobs[i],
                    "address_vector": places[i],
                    "candidates": [],
                    "repeat_reporter": False,
                }
            )
        with store.engine.begin() as conn:
            conn.execute(sa.insert(sa.table("requests", *map(sa.column, requests[0]))), requests)
            conn.execute(sa.insert(duplicates.RequestSignature.__table__), signatures)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")  # both databases plan with fresh statistics


def intake(store: Store, calls: int, seed: int = 5) -> dict[str, Any]:
    rng = random.Random(seed)
    units = _units()
    config = duplicates.Config(threshold=0.0)  # every candidate scored and kept: the worst case
    total, search, read = [], [], []
    for i in range(calls):
        kel, kec = units[rng.randrange(UNITS)]
        record = NewRequest(
            text=f"sampah menumpuk di TPS dekat pasar nomor {i} belum diangkut seminggu",
            category="SAMPAH",
            category_score=0.9,
            agency="Dinas Lingkungan Hidup",
            agency_score=0.9,
            model_version="bench",
            route="auto",
            kelurahan=kel,
            kecamatan=kec,
            address=f"Jalan Pasar Kembang gang {i % 9} nomor {i}",
        )
        began = time.perf_counter()
        ids = store.save_requests([record])
        saved = time.perf_counter()
        duplicates.record(store, ids, [record], [None], config)
        done = time.perf_counter()
        total.append((done - began) * 1000)
        search.append((done - saved) * 1000)
        window = utcnow() - timedelta(days=config.window_days)
        with store.engine.connect() as conn:
            read.append(
                conn.execute(
                    sa.text(
                        "select count(*) from request_signatures "
                        "where kelurahan = :k and received_at >= :t"
                    ),
                    {"k": kel, "t": window},
                ).scalar()
            )
    return {
        "intake_ms_p50": round(statistics.median(total), 2),
        "intake_ms_p95": round(float(np.percentile(total, 95)), 2),
        "search_ms_p50": round(statistics.median(search), 2),
        "search_ms_p95": round(float(np.percentile(search, 95)), 2),
        "candidate_rows_mean": round(statistics.mean(read), 1),
    }


def plan(store: Store) -> str:
    """The database's plan for the candidate query (the index it uses)."""
    sig = duplicates.RequestSignature
    query = sa.select(sig.request_id).where(
        sig.kelurahan == "Kelurahan 1", sig.received_at >= utcnow() - timedelta(days=14)
    )
    compiled = query.compile(store.engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN " if store.engine.dialect.name == "sqlite" else "EXPLAIN "
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + str(compiled)).all()
    return " | ".join(str(row[-1]) for row in rows)


def run(url: str, size: int, days: int, calls: int) -> dict[str, Any]:
    upgrade(url)
    store = Store(make_engine(url))
    try:
        began = time.perf_counter()
        fill(store, size, days)
        filled = time.perf_counter() - began
        result = intake(store, calls)
        return {"stored": size, "fill_s": round(filled, 1), **result, "plan": plan(store)}
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--postgres", default="postgresql+psycopg://127.0.0.1:5432/test")
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            results.append({"database": "sqlite", **run(url, size, args.days, args.calls)})
            print(results[-1], flush=True)
        if args.postgres:
            schema = f"bench_dups_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(args.postgres)
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            try:
                url = f"{args.postgres}?options=-csearch_path%3D{schema}"
                results.append({"database": "postgresql", **run(url, size, args.days, args.calls)})
                print(results[-1], flush=True)
            finally:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                admin.dispose()
    RESULTS.write_text(
        json.dumps(
            {
                "units": UNITS,
                "days": args.days,
                "calls": args.calls,
                # The VM's 2 cores are shared: timings move with the load (1-minute average).
                "load_average_at_end": round(os.getloadavg()[0], 1),
                "vector": duplicates.VECTOR_KIND,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
