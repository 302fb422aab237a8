"""Nothing lost: every acknowledged stored request survives a SIGKILL of the server."""

import os
import signal
import sqlite3
import threading
import time

import httpx

from tests.service.test_server_process import free_port, start_server, wait_http_ready


def test_durability_acknowledged_requests_survive_sigkill(tiny_model, gazetteer_csv, tmp_path):
    data_dir = tmp_path / "var"
    env = {
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(data_dir),
        "ADUAN_API_KEYS": "k1",
        "ADUAN_LOG_LEVEL": "WARNING",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(tiny_model, port, env)
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(timeout=10, headers={"Authorization": "Bearer k1"}) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                text = f"sampah menumpuk pengirim {worker} nomor {i}"
                body = {"items": [{"text": text}, {"text": f"{text} kedua"}], "store": True}
                try:
                    response = client.post(f"{base}/v1/classify", json=body)
                except httpx.TransportError:
                    return  # the server died mid-request: not acknowledged
                if response.status_code == 200:
                    with lock:
                        for item, result in zip(
                            body["items"], response.json()["results"], strict=True
                        ):
                            acknowledged[result["request_id"]] = item["text"]

    try:
        wait_http_ready(base, proc)
        threads = [threading.Thread(target=sender, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: senders are still sending
        proc.wait(timeout=10)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acknowledged) >= 150

    restarted = start_server(tiny_model, port, env)
    try:
        wait_http_ready(base, restarted)
        for rid in list(acknowledged)[:: max(1, len(acknowledged) // 20)]:
            # with the key: keyless reads are rate-limited per address (public_read_rate)
            response = httpx.get(
                f"{base}/open311/v2/requests/{rid}.json", headers={"Authorization": "Bearer k1"}
            )
            assert response.status_code == 200, rid
    finally:
        restarted.terminate()
        restarted.wait(timeout=20)

    with sqlite3.connect(data_dir / "aduan.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        stored = dict(db.execute("SELECT id, text FROM requests").fetchall())
    missing = {rid for rid in acknowledged if rid not in stored}
    assert not missing, f"{len(missing)} acknowledged request(s) lost"
    assert all(stored[rid] == text for rid, text in acknowledged.items())
