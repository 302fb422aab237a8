"""How fast the outbox dispatcher delivers: N routed complaints (their `complaint.routed`
events written with them), then dispatcher rounds until a local receiver has them all; on
SQLite and, with --postgres URL, PostgreSQL. Also the time the event adds to storing a batch.

    .venv/bin/python bench/dispatch.py --events 1000 [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aduan.service.dispatch import Dispatcher, DispatchSettings
from aduan.service.followup import install
from aduan.service.offices import Office, OfficeBook
from aduan.service.storage import NewRequest, Store, make_engine, upgrade

AGENCY = "Dinas Lingkungan Hidup"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def receiver() -> tuple[str, list[str], ThreadingHTTPServer]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.headers["webhook-id"])
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/hook", seen, server


def rows(n: int, route: str) -> list[NewRequest]:
    return [
        NewRequest(
            text=f"sampah menumpuk {i}",
            category="SAMPAH",
            category_score=0.9,
            agency=AGENCY,
            agency_score=0.97,
            model_version="bench",
            route=route,
        )
        for i in range(n)
    ]


def run(url: str, events: int) -> dict[str, float]:
    upgrade(url)
    store = Store(make_engine(url))
    hook, seen, server = receiver()
    book = OfficeBook.of([Office(name=AGENCY, webhook=hook, secret=SECRET)])
    started = time.perf_counter()
    for _ in range(events // 50):
        store.save_requests(rows(50, "review"))  # not routed: no follow-up, no event
    plain = time.perf_counter() - started
    install(store, book)
    started = time.perf_counter()
    for _ in range(events // 50):
        store.save_requests(rows(50, "auto"))
    routed = time.perf_counter() - started
    dispatcher = Dispatcher(store, book, DispatchSettings(batch=100, workers=8))
    started = time.perf_counter()
    while len(seen) < events // 50 * 50:
        dispatcher.run_once()
    delivered = time.perf_counter() - started
    server.shutdown()
    store.close()
    n = events // 50 * 50
    return {
        "store ms per 50 (no follow-up)": 1000 * plain / (n / 50),
        "store ms per 50 (follow-up + events)": 1000 * routed / (n / 50),
        "delivered events/s": n / delivered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        if args.postgres:
            targets["postgresql"] = args.postgres
        for name, url in targets.items():
            for figure, value in run(url, args.events).items():
                print(f"{name}\t{figure}\t{value:.1f}")


if __name__ == "__main__":
    main()
