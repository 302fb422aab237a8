"""Faults while serving: the database goes away and comes back (PostgreSQL behind a proxy
that is cut), the disk fills up under SQLite (a file-size limit on the server process), and
SIGTERM while clients are sending."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_URL
from tests.faults import TcpProxy
from tests.figures import record
from tests.service.test_server_process import free_port, wait_http_ready

KEY = "rahasia-faults"
AUTH = {"Authorization": f"Bearer {KEY}"}
AD = str(Path(sys.executable).with_name("aduan"))


def items(*texts: str, store: bool = False) -> dict:
    return {"items": [{"text": t} for t in texts], "store": store}


@pytest.fixture
def postgres_schema():
    """A fresh schema in the local PostgreSQL; yields its name."""
    schema = f"aduan_fault_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield schema
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _rows(schema: str) -> dict[str, str]:
    engine = sa.create_engine(POSTGRES_URL)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT id, text FROM "{schema}".requests')).fetchall()
    engine.dispose()
    return {r[0]: r[1] for r in rows}


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_faults_database_outage_answers_503_and_recovers_by_itself(make_client, postgres_schema):
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    url = f"postgresql+psycopg://127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{postgres_schema}"
    client = make_client(api_keys=KEY, operator_keys=KEY, database_url=url, db_check_interval_s=0.2)
    try:
        stored = client.post(
            "/v1/classify", json=items("lampu PJU padam", store=True), headers=AUTH
        )
        assert stored.status_code == 200
        first = stored.json()["results"][0]["request_id"]
        form = client.get("/ui/login")
        client.post("/ui/login", data={"key": KEY, "csrf": _csrf(form.text)})
        assert client.get("/ui/queue").status_code == 200

        proxy.stop()  # the database goes away; pooled connections break too
        cut = time.monotonic()
        # classify without store does not need the database
        for _ in range(5):
            answer = client.post("/v1/classify", json=items("sampah menumpuk"), headers=AUTH)
            assert answer.status_code == 200
        refused = {
            "store": client.post(
                "/v1/classify",
                json=items("bansos belum cair OUTAGE-1", "lampu mati OUTAGE-2", store=True),
                headers=AUTH,
            ),
            "feedback": client.post(
                "/v1/feedback",
                json={
                    "request_id": first,
                    "agency": "Dinas Sosial",
                    "category": "PJU",
                    "operator": "siti",
                },
                headers=AUTH,
            ),
            "queue": client.get("/v1/requests", headers=AUTH),
            "read": client.get(f"/v1/requests/{first}", headers=AUTH),
            "patch": client.patch(f"/v1/requests/{first}", json={"status": "closed"}, headers=AUTH),
            "workbench": client.get("/ui/queue"),
        }
        for name, response in refused.items():
            assert response.status_code == 503, (name, response.text)
            assert response.json()["error_type"] == "database_unavailable", name
            assert "nothing was stored or changed" in response.json()["error"]
            assert response.headers["retry-after"] == "5"
        open311 = client.post(
            "/open311/v2/requests.json",
            data={"description": "jalan berlubang OUTAGE-3", "api_key": KEY},
        )
        assert open311.status_code == 503
        assert "database is unavailable" in open311.json()[0]["description"]
        assert client.get(f"/open311/v2/requests/{first}.json").status_code == 503
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["database"] == "unavailable" and ready.json()["status"] == "degraded"
        client.app.state.service.settings.ready_requires_database = True
        assert client.get("/health/ready").status_code == 503
        client.app.state.service.settings.ready_requires_database = False
        assert client.get("/metrics").status_code == 200
        outage = time.monotonic() - cut

        proxy.start()  # the database is back, on the same address
        back = time.monotonic()
        while True:
            again = client.post(
                "/v1/classify", json=items("lampu padam lagi", store=True), headers=AUTH
            )
            if again.status_code == 200:
                break
            assert again.status_code == 503
            assert time.monotonic() - back < 10, "did not recover"
            time.sleep(0.05)
        recovered_store = time.monotonic() - back
        while client.get("/health/ready").json()["database"] != "ok":
            assert time.monotonic() - back < 10, "readiness did not recover"
            time.sleep(0.05)
        recovered_ready = time.monotonic() - back
        assert client.get("/ui/queue").status_code == 200
        patch = client.patch(f"/v1/requests/{first}", json={"status": "closed"}, headers=AUTH)
        assert patch.status_code == 200
    finally:
        proxy.stop()
    rows = _rows(postgres_schema)
    second = again.json()["results"][0]["request_id"]
    assert set(rows) == {first, second}  # nothing half-written during the outage
    assert not any("OUTAGE" in text for text in rows.values())
    record(
        "faults_database_outage",
        "PostgreSQL cut off while serving: classify without store answers, storing, feedback, "
        "review, workbench and Open311 answer 503 with nothing written; recovers by itself",
        {
            "classify during outage": "5/5 answered",
            "503 answers": len(refused) + 2,
            "rows written during outage": 0,
            "outage s": round(outage, 2),
            "recovery s (first stored request)": round(recovered_store, 2),
            "recovery s (readiness)": round(recovered_ready, 2),
        },
        "pytest tests/service/test_faults.py -k database_outage",
    )


def _drain(proc: subprocess.Popen, sink: list[bytes]) -> threading.Thread:
    """Read the server's output into `sink` (a pipe, not a file: the file-size limit must
    not hit the log)."""

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _ignore_sigxfsz() -> None:
    # Past the limit write() fails with EFBIG instead of the process being killed: the
    # disk-full case SQLite must handle.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.skipif(not hasattr(__import__("resource"), "prlimit"), reason="Linux prlimit")
def test_faults_sqlite_disk_full_answers_503_without_corruption(
    tiny_model, gazetteer_csv, tmp_path
):
    import resource

    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(data_dir),
        "ADUAN_DB_CHECK_INTERVAL_S": "0.2",
        "ADUAN_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [AD, "serve", "--model", str(tiny_model), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignore_sigxfsz,
    )
    output: list[bytes] = []
    _drain(proc, output)
    acknowledged: dict[str, str] = {}
    refused: list[str] = []
    filler = " ".join(["sampah menumpuk di pinggir jalan"] * 60)  # ~2 KB a request

    def store(client: httpx.Client, text: str) -> int:
        response = client.post(f"{base}/v1/classify", json=items(text, store=True))
        if response.status_code == 200:
            acknowledged[response.json()["results"][0]["request_id"]] = text
        else:
            assert response.status_code == 503, response.text
            assert response.json()["error_type"] == "database_unavailable"
            refused.append(text)
        return response.status_code

    try:
        wait_http_ready(base, proc)
        with httpx.Client(timeout=30) as client:
            for i in range(20):
                assert store(client, f"sebelum {i} {filler}") == 200
            files = [data_dir / n for n in ("aduan.db", "aduan.db-wal")]
            largest = max(p.stat().st_size for p in files if p.exists())
            # the disk is full: no file of the server may grow past its current size
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (largest, resource.RLIM_INFINITY))
            first_full = None
            for i in range(3000):
                if store(client, f"penuh {i} {filler}") == 503:
                    first_full = i
                    break
            assert first_full is not None, "the size limit never filled the database"
            for i in range(5):  # it keeps answering 503 while the disk is full
                assert store(client, f"masih penuh {i} {filler}") == 503
            ready = client.get(f"{base}/health/ready").json()
            assert ready["database"] == "unavailable"
            answer = client.post(f"{base}/v1/classify", json=items("lampu padam"))
            assert answer.status_code == 200  # classify without store still works
            # space returns
            resource.prlimit(
                proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
            back = time.monotonic()
            while store(client, f"sesudah {filler}") != 200:
                assert time.monotonic() - back < 10, "no recovery after space returned"
                time.sleep(0.05)
            recovery = time.monotonic() - back
            while client.get(f"{base}/health/ready").json()["database"] != "ok":
                assert time.monotonic() - back < 10
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    with sqlite3.connect(data_dir / "aduan.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = dict(db.execute("SELECT id, text FROM requests").fetchall())
    assert all(stored.get(rid) == text for rid, text in acknowledged.items())
    assert set(stored.values()).isdisjoint(refused)  # no refused request was half-written
    log = b"".join(output).decode(errors="replace")
    assert "database or disk is full" in log or "disk I/O error" in log
    assert "Traceback" not in log
    record(
        "faults_sqlite_disk_full",
        "SQLite's files may not grow (RLIMIT_FSIZE on the server process): storing answers "
        "503, classify still answers; the limit lifted, storing resumes; integrity_check ok",
        {
            "stored before full": 20 + first_full,
            "503 answers": len(refused),
            "acknowledged and present": f"{len(acknowledged)}/{len(acknowledged)}",
            "refused but written": 0,
            "integrity_check": "ok",
            "recovery s": round(recovery, 2),
        },
        "pytest tests/service/test_faults.py -k disk_full",
    )


def test_faults_sigterm_drains_in_flight_requests_and_exits_0(tiny_model, gazetteer_csv, tmp_path):
    """Clients send batches while the server gets SIGTERM: readiness fails at once, requests
    are still answered during the drain delay, in-flight ones finish, new connections are
    then refused, and the process exits 0. No answer is broken."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(tmp_path / "var"),
        "ADUAN_DRAIN_DELAY_S": "1",
        "ADUAN_SHUTDOWN_TIMEOUT_S": "10",
        "ADUAN_LOG_LEVEL": "INFO",
    }
    proc = subprocess.Popen(
        [AD, "serve", "--model", str(tiny_model), "--port", str(port)],
        env=env,
        stdout=(tmp_path / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    texts = [f"lampu PJU padam gelap nomor {i} " * 20 for i in range(64)]
    outcomes: dict[str, int] = {"ok": 0, "refused": 0, "shed": 0}
    broken: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def sender() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{base}/v1/classify", json=items(*texts))
                except httpx.ConnectError:
                    with lock:
                        outcomes["refused"] += 1  # never reached the server: safe to retry
                    time.sleep(0.02)
                    continue
                except httpx.HTTPError as exc:
                    with lock:
                        broken.append(repr(exc))
                    continue
                with lock:
                    if response.status_code == 200 and len(response.json()["results"]) == 64:
                        outcomes["ok"] += 1
                    elif response.status_code == 429 and response.headers.get("retry-after"):
                        outcomes["shed"] += 1  # a deliberate, complete answer: retry later
                    else:
                        broken.append(f"{response.status_code} {response.text[:100]}")

    try:
        wait_http_ready(base, proc)
        threads = [threading.Thread(target=sender) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while outcomes["ok"] + outcomes["shed"] < 2:  # requests are flowing (a slow machine)
            assert time.monotonic() < deadline, "no answer before SIGTERM"
            time.sleep(0.05)
        before = outcomes["ok"] + outcomes["shed"]
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        time.sleep(0.3)
        ready = httpx.get(f"{base}/health/ready", timeout=5)
        assert ready.status_code == 503 and "shutting down" in ready.json()["error"]
        proc.wait(timeout=30)
        stopped = time.monotonic() - sent
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert broken == []
    assert outcomes["ok"] > 0
    assert outcomes["ok"] + outcomes["shed"] > before  # answered after SIGTERM too
    assert outcomes["refused"] > 0  # and then the listener was closed
    assert 1.0 <= stopped < 12
    log = (tmp_path / "server.log").read_text()
    assert "SIGTERM: draining" in log and "Traceback" not in log
    record(
        "faults_sigterm_drain",
        "6 clients send 64-text batches; SIGTERM: readiness 503 at once, 1 s drain still "
        "serving, in-flight requests finish, exit 0",
        {
            "answered": outcomes["ok"],
            "answered after SIGTERM (200 or 429)": outcomes["ok"] + outcomes["shed"] - before,
            "broken answers": len(broken),
            "429 (shed, with Retry-After)": outcomes["shed"],
            "refused connections (after close)": outcomes["refused"],
            "exit code": proc.returncode,
            "SIGTERM to exit s": round(stopped, 2),
        },
        "pytest tests/service/test_faults.py -k sigterm",
    )


def test_faults_database_that_hangs_is_cut_off_and_the_rest_keeps_serving(
    tiny_model, gazetteer_csv, tmp_path, postgres_schema
):
    """PostgreSQL stops answering without closing anything (the proxy swallows every byte,
    accepts new connections and never answers them): storing answers 503 within the
    deadline and its connection is cut (nothing written), while classify, labels and health
    are served from threads the database does not hold; forwarding again, storing resumes."""
    from concurrent.futures import ThreadPoolExecutor

    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    url = f"postgresql+psycopg://127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{postgres_schema}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(tmp_path / "var"),
        "ADUAN_DATABASE_URL": url,
        "ADUAN_API_KEYS": KEY,
        "ADUAN_OPERATOR_KEYS": KEY,
        "ADUAN_DB_TIMEOUT_S": "1",
        "ADUAN_DB_THREADS": "2",
        "ADUAN_DB_CHECK_INTERVAL_S": "0.5",
        "ADUAN_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [AD, "serve", "--model", str(tiny_model), "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def timed(call):
        started = time.monotonic()
        response = call()
        return response.status_code, time.monotonic() - started, response

    try:
        wait_http_ready(base, proc)
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
            first = client.post("/v1/classify", json=items("lampu PJU padam", store=True))
            assert first.status_code == 200
            proxy.freeze()
            frozen = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                stores = [
                    pool.submit(
                        timed,
                        lambda i=i: client.post(
                            "/v1/classify", json=items(f"sampah HANG-{i}", store=True)
                        ),
                    )
                    for i in range(8)
                ]
                time.sleep(0.3)  # the database threads are stuck now
                served = [
                    timed(lambda: client.post("/v1/classify", json=items("lampu padam")))
                    for _ in range(5)
                ] + [
                    timed(lambda: client.get("/v1/labels")),
                    timed(lambda: client.get("/health/live")),
                ]
                queue = timed(lambda: client.get("/v1/requests"))
                stored = [future.result() for future in stores]
            deadline = time.monotonic() + 10
            while client.get("/health/ready").json()["database"] != "unavailable":
                assert time.monotonic() < deadline, "readiness never saw the hang"
                time.sleep(0.1)
            hung_for = time.monotonic() - frozen
            proxy.thaw()
            back = time.monotonic()
            while True:
                again = client.post("/v1/classify", json=items("lampu padam lagi", store=True))
                if again.status_code == 200:
                    break
                assert again.status_code == 503 and time.monotonic() - back < 20, again.text
                time.sleep(0.2)
            recovered = time.monotonic() - back
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proxy.stop()
    assert [status for status, _, _ in served] == [200] * 7
    assert max(seconds for _, seconds, _ in served) < 2
    assert {status for status, _, _ in stored} == {503}
    assert all(r.json()["error_type"] == "database_unavailable" for _, _, r in stored)
    assert max(seconds for _, seconds, _ in stored) < 10  # deadline 1 s + connect 5 s
    assert queue[0] == 503
    rows = _rows(postgres_schema)
    assert len(rows) == 2 and not any("HANG" in text for text in rows.values())
    output = log.read_text()
    assert "outlived its 1.0 s deadline" in output and "Traceback" not in output
    record(
        "faults_database_hangs",
        "PostgreSQL black-holed while serving (a proxy swallows every byte, closes nothing): "
        "8 concurrent storing requests answer 503 within the deadline (ADUAN_DB_TIMEOUT_S=1) "
        "plus the connect timeout, their connections cut, nothing written; classify, labels "
        "and health answered meanwhile; forwarding again, storing resumes",
        {
            "storing answered 503": f"{len(stored)}/{len(stored)}",
            "slowest 503 s": round(max(s for _, s, _ in stored), 2),
            "served meanwhile": f"{len(served)}/{len(served)}",
            "slowest served ms": round(1000 * max(s for _, s, _ in served), 1),
            "rows written while hung": 0,
            "hang s": round(hung_for, 1),
            "recovery s": round(recovered, 2),
        },
        "pytest tests/service/test_faults.py -k hangs",
    )


def test_faults_postgres_connections_carry_keepalives_and_timeouts():
    """The kernel notices a PostgreSQL peer that vanished (keepalives, tcp_user_timeout) and
    the server ends a statement or an idle transaction past the deadline; migrations run
    without one."""
    from aduan.service.storage import make_engine

    engine = make_engine(POSTGRES_URL, statement_timeout_s=2)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "2s"
        assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "2s"
        params = conn.connection.dbapi_connection.info.get_parameters()
    engine.dispose()
    assert params["keepalives"] == "1" and int(params["tcp_user_timeout"]) > 0
    assert int(params["keepalives_idle"]) * int(params["keepalives_count"]) <= 30
    unbounded = make_engine(POSTGRES_URL)
    with unbounded.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
    unbounded.dispose()
