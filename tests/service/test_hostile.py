"""A catalogue of hostile inputs, each with the status and error body it must get, against the
JSON API, Open311 and the operator routes (on SQLite and PostgreSQL); and the ones only a real
server shows: an oversized head, a body sent byte by byte, a chunked body over the limit."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.figures import record
from tests.service.test_server_process import AD, free_port, start_server, wait_http_ready

KEY = "rahasia-hostile"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
RID = "{rid}"  # replaced by a stored request's id


@dataclass
class Case:
    name: str
    method: str
    path: str
    status: int
    fragment: str  # must appear in the error message ("" for a success)
    json: Any = None
    content: bytes | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))


def items(*texts: Any) -> dict[str, Any]:
    return {"items": [{"text": t} for t in texts]}


def raw(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


CASES = [
    # --- POST /v1/classify
    Case("empty text", "POST", "/v1/classify", 422, "empty or whitespace", json=items("")),
    Case("whitespace-only text", "POST", "/v1/classify", 422, "empty", json=items(" \n\t\u3000 ")),
    Case("1 MB text", "POST", "/v1/classify", 413, "1000000 characters", json=items("a" * 10**6)),
    Case(
        "10,000 items", "POST", "/v1/classify", 413, "10000 items", json=items(*["lampu"] * 10_000)
    ),
    Case(
        "invalid UTF-8",
        "POST",
        "/v1/classify",
        422,
        "not valid UTF-8",
        content=b'{"items": [{"text": "lampu \xff\xfe padam"}]}',
        headers=JSON,
    ),
    Case("NUL bytes", "POST", "/v1/classify", 422, "NUL", json=items("lampu\x00padam")),
    Case(
        "lone surrogate",
        "POST",
        "/v1/classify",
        422,
        "lone surrogate",
        content=raw('{"items": [{"text": "lampu \\ud800 padam"}]}'),
        headers=JSON,
    ),
    Case("emoji", "POST", "/v1/classify", 200, "", json=items("😡🗑️ sampah numpuk 🤮 " * 50)),
    Case(
        "right-to-left flood",
        "POST",
        "/v1/classify",
        200,
        "",
        json=items("\u202e" * 5000 + "سلام" * 1000),
    ),
    Case(
        "combining-character flood",
        "POST",
        "/v1/classify",
        200,
        "",
        json=items("a" + "\u0301" * 9999),
    ),
    Case(
        "64 texts of 10,000 word characters (once quadratic in a regex)",
        "POST",
        "/v1/classify",
        200,
        "",
        json=items(*["a" * 10_000] * 64),
    ),
    Case(
        "wrong content type",
        "POST",
        "/v1/classify",
        415,
        "application/json",
        content=raw(json.dumps(items("lampu padam"))),
        headers={**AUTH, "Content-Type": "text/plain"},
    ),
    Case(
        "form instead of JSON",
        "POST",
        "/v1/classify",
        415,
        "application/json",
        data={"text": "lampu padam"},
    ),
    Case(
        "deeply nested JSON",
        "POST",
        "/v1/classify",
        422,
        "nested too deeply",
        content=b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers=JSON,
    ),
    Case("number for a string", "POST", "/v1/classify", 422, "items.0.text", json=items(123)),
    Case("array for a string", "POST", "/v1/classify", 422, "items.0.text", json=items(["a"])),
    Case(
        "object for the list",
        "POST",
        "/v1/classify",
        422,
        "items",
        json={"items": {"text": "lampu"}},
    ),
    Case(
        "duplicate keys",
        "POST",
        "/v1/classify",
        422,
        "duplicate key 'items'",
        content=b'{"items": [{"text": "a"}], "items": [{"text": "b"}]}',
        headers=JSON,
    ),
    Case(
        "not JSON",
        "POST",
        "/v1/classify",
        422,
        "not valid JSON",
        content=b'{"items": [',
        headers=JSON,
    ),
    Case("JSON null", "POST", "/v1/classify", 422, "", content=b"null", headers=JSON),
    Case(
        "unknown field",
        "POST",
        "/v1/classify",
        422,
        "admin: Extra inputs are not permitted",
        json={**items("lampu"), "admin": True},
    ),
    Case(
        "top_k a billion", "POST", "/v1/classify", 422, "top_k", json={**items("x"), "top_k": 10**9}
    ),
    Case(
        "5 MB body",
        "POST",
        "/v1/classify",
        413,
        "the limit is",
        content=b" " * (5 * 1024 * 1024),
        headers=JSON,
    ),
    Case(
        "vertical tab in a text",
        "POST",
        "/v1/classify",
        422,
        "control character U+000B",
        json=items("lampu\x0bpadam"),
    ),
    Case(
        "escape in an address",
        "POST",
        "/v1/classify",
        422,
        "control character U+001B",
        json={"items": [{"text": "lampu padam", "address": "Jl. \x1b[31mDarmo"}]},
    ),
    Case("NUL in the URL", "GET", "/v1/requests/%00abc", 400, "NUL"),
    Case("NUL in a query", "GET", "/v1/requests?kecamatan=%00", 400, "NUL"),
    Case(
        "oversized header",
        "GET",
        "/v1/info",
        431,
        "the limit is 16384",
        headers={**AUTH, "X-Padding": "a" * 20_000},
    ),
    # --- Open311
    Case(
        "Open311 invalid UTF-8 JSON",
        "POST",
        "/open311/v2/requests.json",
        400,
        "not valid UTF-8",
        content=b'{"description": "lampu \xff padam", "api_key": "' + KEY.encode() + b'"}',
        headers=JSON,
    ),
    Case(
        "Open311 duplicate keys",
        "POST",
        "/open311/v2/requests.json",
        400,
        "duplicate key",
        content=raw(f'{{"description": "a", "description": "b", "api_key": "{KEY}"}}'),
        headers=JSON,
    ),
    Case(
        "Open311 NUL",
        "POST",
        "/open311/v2/requests.json",
        400,
        "NUL",
        data={"description": "lampu\x00padam", "api_key": KEY},
    ),
    Case(
        "Open311 1 MB description",
        "POST",
        "/open311/v2/requests.json",
        413,
        "longer than",
        data={"description": "a" * 10**6, "api_key": KEY},
    ),
    Case(
        "Open311 whitespace description",
        "POST",
        "/open311/v2/requests.json",
        400,
        "description is required",
        data={"description": "   ", "api_key": KEY},
    ),
    Case(
        "Open311 latitude not a number",
        "POST",
        "/open311/v2/requests.json",
        400,
        "lat must be a number",
        data={"description": "lampu padam", "lat": "utara", "api_key": KEY},
    ),
    Case(
        "Open311 JSON array body",
        "POST",
        "/open311/v2/requests.json",
        400,
        "must be an object",
        content=b"[1, 2]",
        headers=JSON,
    ),
    Case("Open311 NUL in id", "GET", "/open311/v2/requests/%00.json", 400, "NUL"),
    Case(
        "Open311 vertical tab in address",
        "POST",
        "/open311/v2/requests.json",
        400,
        "address_string: control character U+000B",
        data={"description": "lampu padam", "address_string": "Jl.\x0bDarmo", "api_key": KEY},
    ),
    Case(
        "Open311 200,000-character address",
        "POST",
        "/open311/v2/requests.json",
        400,
        "address_string is longer than 1000 characters",
        data={"description": "lampu padam", "address_string": "a" * 200_000, "api_key": KEY},
    ),
    Case(
        "Open311 3,000-character media_url",
        "POST",
        "/open311/v2/requests.json",
        400,
        "media_url is longer than 2048 characters",
        data={"description": "lampu padam", "media_url": "https://x/" + "a" * 3000, "api_key": KEY},
    ),
    Case(
        "Open311 oversized device_id",
        "POST",
        "/open311/v2/requests.json",
        400,
        "device_id is longer than 200 characters",
        data={"description": "lampu padam", "device_id": "d" * 5000, "api_key": KEY},
    ),
    Case(
        "Open311 javascript: media_url",
        "POST",
        "/open311/v2/requests.json",
        400,
        "media_url must be an absolute http or https URL",
        data={"description": "lampu padam", "media_url": "javascript:alert(1)", "api_key": KEY},
    ),
    Case(
        "Open311 Idempotency-Key with a space",
        "POST",
        "/open311/v2/requests.json",
        400,
        "Idempotency-Key header must be 1 to 255 visible ASCII characters",
        data={"description": "lampu padam", "api_key": KEY},
        headers={"Idempotency-Key": "a b"},
    ),
    # --- operator routes
    Case("operator NUL note", "PATCH", f"/v1/requests/{RID}", 422, "NUL", json={"note": "a\x00"}),
    Case(
        "operator 3,000-char note",
        "PATCH",
        f"/v1/requests/{RID}",
        422,
        "note",
        json={"note": "a" * 3000},
    ),
    Case(
        "operator array status",
        "PATCH",
        f"/v1/requests/{RID}",
        422,
        "status",
        json={"status": ["closed"]},
    ),
    Case(
        "operator duplicate keys",
        "PATCH",
        f"/v1/requests/{RID}",
        422,
        "duplicate key 'status'",
        content=b'{"status": "open", "status": "closed"}',
        headers=JSON,
    ),
    Case(
        "operator form body",
        "PATCH",
        f"/v1/requests/{RID}",
        415,
        "application/json",
        data={"status": "closed"},
    ),
    Case("operator bad date filter", "GET", "/v1/requests?since=kemarin", 422, "since"),
    Case("operator negative limit", "GET", "/v1/requests?limit=-1", 422, "limit"),
    Case(
        "operator 10,000-char id", "GET", "/v1/requests/" + "a" * 10_000, 404, "no stored request"
    ),
    Case(
        "feedback number for operator",
        "POST",
        "/v1/feedback",
        422,
        "operator",
        json={"request_id": "x", "agency": "a", "category": "b", "operator": 7},
    ),
]


def _message(response: httpx.Response) -> str:
    body = response.json()
    if isinstance(body, list):  # Open311's [{"code", "description"}]
        assert body[0]["code"] == response.status_code
        return str(body[0]["description"])
    assert set(body) == {"error", "error_type"}, body
    return str(body["error"])


def run_case(client: Any, case: Case, rid: str) -> str | None:
    """None when the answer is as catalogued, else what differs."""
    path = case.path.replace(RID, rid)
    started = time.perf_counter()
    response = client.request(
        case.method,
        path,
        json=case.json,
        content=case.content,
        data=case.data,
        headers=case.headers,
    )
    seconds = time.perf_counter() - started
    if response.status_code != case.status:
        return f"{case.name}: {response.status_code} {response.text[:200]}"
    if seconds > 5:
        return f"{case.name}: took {seconds:.1f} s"
    if case.status >= 400:
        message = _message(response)
        if case.fragment not in message:
            return f"{case.name}: message {message!r} lacks {case.fragment!r}"
    elif case.path == "/v1/classify":
        assert response.json()["results"][0]["agency"]["label"]
    return None


def test_hostile_catalogue_gets_its_statuses_and_error_bodies(make_client, database_url):
    client = make_client(api_keys=KEY, operator_keys=KEY, database_url=database_url)
    stored = client.post(
        "/v1/classify", json={**items("lampu PJU padam"), "store": True}, headers=AUTH
    )
    rid = stored.json()["results"][0]["request_id"]
    before = client.get(f"/v1/requests/{rid}", headers=AUTH).json()
    wrong = [problem for case in CASES if (problem := run_case(client, case, rid))]
    assert wrong == []
    # nothing hostile changed the stored request, and the service still answers
    after = client.get(f"/v1/requests/{rid}", headers=AUTH).json()
    assert after == before
    assert client.post("/v1/classify", json=items("lampu padam"), headers=AUTH).status_code == 200
    record(
        f"hostile_catalogue_{database_url.split(':')[0].split('+')[0]}",
        "every catalogued hostile input (JSON API, Open311, operator routes) gets its status "
        "and error body; the stored request is unchanged afterwards",
        {"inputs": len(CASES), "unexpected answers": len(wrong), "5xx": 0},
        "pytest tests/service/test_hostile.py -k catalogue",
    )


# --- the real server: what only a socket shows


def _raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
        return out


@pytest.fixture
def server(tiny_model, gazetteer_csv, tmp_path):
    port = free_port()
    env = {
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(tmp_path / "var"),
        "ADUAN_BODY_TIMEOUT_S": "1",
        "ADUAN_MAX_BODY_BYTES": str(256 * 1024),
        "ADUAN_LOG_LEVEL": "WARNING",
    }
    proc = start_server(tiny_model, port, env)
    try:
        wait_http_ready(f"http://127.0.0.1:{port}", proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_hostile_slow_body_times_out_without_stalling_other_clients(server):
    """A client that sends its body a byte at a time gets 408 after the body deadline, and
    other clients are answered at full speed meanwhile."""
    body = json.dumps(items("lampu padam gelap")).encode()
    head = (
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    others = []
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        sock.setblocking(False)
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                break
            t0 = time.monotonic()
            other = httpx.post(f"http://127.0.0.1:{server}/v1/classify", json=items("sampah"))
            others.append((other.status_code, time.monotonic() - t0))
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer:
                break
            time.sleep(0.05)
        sock.setblocking(True)
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
    status = int(answer.split(b" ", 2)[1])
    assert status == 408, answer[:300]
    assert b"connection: close" in answer.lower()
    assert 0.9 <= waited < 5
    assert others and all(code == 200 for code, _ in others)
    assert max(seconds for _, seconds in others) < 2
    record(
        "hostile_slow_body",
        "a client sends its body one byte every 50 ms: 408 at the 1 s body deadline, while "
        "another client's requests are all answered",
        {
            "status": status,
            "answered after s": round(waited, 2),
            "other requests": len(others),
            "other errors": sum(code != 200 for code, _ in others),
            "other p100 ms": round(1000 * max(s for _, s in others), 1),
        },
        "pytest tests/service/test_hostile.py -k slow_body",
    )


def test_hostile_oversized_head_and_chunked_body_are_refused_by_the_server(server):
    head = _raw_exchange(
        server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 431") and b"headers_too_large" in head
    # a chunked body (no Content-Length) is counted while it streams in
    chunk = b"a" * 65536
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        answer = b""
        for _ in range(8):  # 512 KiB offered, 256 KiB allowed
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.2)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        sock.settimeout(2)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer
    # and the server still answers
    ok = httpx.post(f"http://127.0.0.1:{server}/v1/classify", json=items("lampu padam"))
    assert ok.status_code == 200


@contextlib.contextmanager
def _serving(tiny_model, gazetteer_csv, tmp_path, **settings: str):
    """`aduan serve` with these ADUAN_* settings (keys configured), logging to a file;
    yields (port, log path, process)."""
    port = free_port()
    env = {
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(tmp_path / "var"),
        "ADUAN_API_KEYS": KEY,
        "ADUAN_LOG_LEVEL": "INFO",
        "ADUAN_LOG_FORMAT": "json",
        **{f"ADUAN_{name.upper()}": value for name, value in settings.items()},
    }
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [AD, "serve", "--model", str(tiny_model), "--port", str(port)],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http_ready(f"http://127.0.0.1:{port}", proc)
        yield port, log, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_hostile_slow_uploads_without_a_key_do_not_shed_other_clients(
    tiny_model, gazetteer_csv, tmp_path
):
    """40 connections each send a head announcing a 1,000-byte classify body, then 1 byte,
    and hold (no key needed for that): the admission control must not count them, so
    GET /v1/labels and classify with a key keep being answered (they got 429 before)."""
    body_head = (
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    with _serving(tiny_model, gazetteer_csv, tmp_path, body_timeout_s="30") as (port, _, _p):
        held = []
        try:
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(body_head)
                held.append(sock)
            time.sleep(0.5)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
                labels = [client.get("/v1/labels").status_code for _ in range(30)]
                classify = [
                    client.post("/v1/classify", json=items("lampu padam")).status_code
                    for _ in range(10)
                ]
        finally:
            for sock in held:
                sock.close()
    assert labels == [200] * 30 and classify == [200] * 10
    record(
        "hostile_slow_uploads",
        "40 connections without a key send a classify head and 1 byte of a 1,000-byte body "
        "and hold; meanwhile GET /v1/labels and classify with a key (they were shed with 429 "
        "once 8 requests had completed)",
        {
            "slow uploads held": len(held),
            "labels answered 200": f"{labels.count(200)}/{len(labels)}",
            "classify answered 200": f"{classify.count(200)}/{len(classify)}",
            "429": labels.count(429) + classify.count(429),
        },
        "pytest tests/service/test_hostile.py -k slow_uploads",
    )


def _until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection (or `limit` s pass), and when."""
    started = time.monotonic()
    sock.settimeout(0.1)
    answer = b""
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    return answer, time.monotonic() - started


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hostile_request_heads_are_bounded_in_time(tiny_model, gazetteer_csv, tmp_path):
    """An idle connection and a head trickled a byte every 100 ms are cut at the 1 s head
    deadline (the trickled one with 408); others are answered meanwhile; past
    ADUAN_MAX_CONNECTIONS the server answers 503 instead of queueing."""
    settings = {"header_timeout_s": "1", "max_connections": "6"}
    with _serving(tiny_model, gazetteer_csv, tmp_path, **settings) as (port, _, _p):
        base = f"http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port)) as idle:
            idle_answer, idle_closed = _until_closed(idle, 10)
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started, others, answer = time.monotonic(), [], b""
            slow.settimeout(0.1)
            while time.monotonic() - started < 10 and not answer:
                try:
                    slow.sendall(b"a")
                    answer = slow.recv(65536)
                except TimeoutError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    break
                others.append(httpx.get(f"{base}/health/live").status_code)
            rest, _ = _until_closed(slow, 5)
            answer += rest
            slow_closed = time.monotonic() - started
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
        try:
            time.sleep(0.2)
            over = httpx.get(f"{base}/health/live")
        finally:
            for sock in held:
                sock.close()
    assert idle_answer == b"" and 0.9 <= idle_closed < 3
    assert answer.startswith(b"HTTP/1.1 408") and b'"error_type": "timeout"' in answer
    assert 0.9 <= slow_closed < 3
    assert others and set(others) == {200}
    assert over.status_code == 503
    record(
        "hostile_slow_head",
        "an idle connection, and a head sent one byte every 100 ms, with a 1 s head deadline "
        "(ADUAN_HEADER_TIMEOUT_S); then ADUAN_MAX_CONNECTIONS+1 connections",
        {
            "idle closed after s": round(idle_closed, 2),
            "trickled head": f"408 after {slow_closed:.2f} s",
            "other requests meanwhile": f"{others.count(200)}/{len(others)} answered",
            "over the connection limit": over.status_code,
        },
        "pytest tests/service/test_hostile.py -k bounded_in_time",
    )


def test_hostile_a_128_mb_head_is_refused_without_being_buffered(
    tiny_model, gazetteer_csv, tmp_path
):
    """h11 refuses a head growing past ADUAN_MAX_HEADER_BYTES at once (431); httptools,
    which uvicorn picks when installed, buffered all 128 MB (+94 MB resident) first."""
    with _serving(tiny_model, gazetteer_csv, tmp_path) as (port, _, proc):
        before = _rss_kb(proc.pid)
        chunk = b"a" * 65536
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                while sent < 128 * 1024 * 1024:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer, _ = _until_closed(sock, 5)
        grown = (_rss_kb(proc.pid) - before) / 1024
        still = httpx.get(f"http://127.0.0.1:{port}/health/live").status_code
    assert answer.startswith(b"HTTP/1.1 431") and b"headers_too_large" in answer
    assert sent < 8 * 1024 * 1024  # refused within the first megabytes, not at the end
    assert grown < 20 and still == 200
    record(
        "hostile_huge_head",
        "a client sends a 128 MB request head: 431 as soon as it passes the 16 KiB limit",
        {
            "status": int(answer.split(b" ", 2)[1]),
            "MB sent before the server closed": round(sent / 2**20, 1),
            "resident memory growth MB": round(grown, 1),
        },
        "pytest tests/service/test_hostile.py -k 128_mb",
    )


def test_hostile_a_client_that_drops_mid_upload_is_not_an_error(
    tiny_model, gazetteer_csv, tmp_path
):
    """Clients that close the connection halfway through their body: logged as a client that
    went away (no 500, no ERROR, no traceback); the service answers the next client."""
    head = (
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
    )
    with _serving(tiny_model, gazetteer_csv, tmp_path) as (port, log, _p):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(head + b'{"items": [{"text": "lampu')
                time.sleep(0.2)
        time.sleep(0.5)
        after = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json=items("x"), headers=AUTH)
    output = log.read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    statuses = [line.get("status") for line in lines if line.get("handler") == "/v1/classify"]
    assert after.status_code == 200
    assert "Traceback" not in output and '"level": "ERROR"' not in output
    assert 500 not in statuses
    gone = [line for line in lines if "disconnected" in str(line.get("message", ""))]
    assert len(gone) == 3
    record(
        "hostile_client_drops_mid_upload",
        "3 clients close the connection halfway through a classify body",
        {
            "500 answers logged": statuses.count(500),
            "ERROR lines": output.count('"level": "ERROR"'),
            "tracebacks": output.count("Traceback"),
            "logged as client gone": len(gone),
        },
        "pytest tests/service/test_hostile.py -k drops_mid_upload",
    )
