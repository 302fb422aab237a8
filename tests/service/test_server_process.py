"""The real `aduan serve` process on a free loopback port."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aduan.model.artifacts import write_manifest

AD = str(Path(sys.executable).with_name("aduan"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [AD, "serve", "--model", str(model), "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_http_ready(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode()[-2000:] if proc.stdout else ""
            raise AssertionError(f"server exited: {output}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server never became ready")


@pytest.fixture
def server_env(gazetteer_csv, tmp_path):
    return {"ADUAN_GAZETTEER": str(gazetteer_csv), "ADUAN_DATA_DIR": str(tmp_path / "var")}


def test_server_process_serves_classify(tiny_model, server_env):
    port = free_port()
    proc = start_server(tiny_model, port, server_env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, proc)
        response = httpx.post(
            f"{base}/v1/classify",
            timeout=10,
            json={"items": [{"text": "lampu PJU padam gelap sekali"}]},
        )
        assert response.status_code == 200
        assert response.json()["results"][0]["category"]["label"] == "PJU"
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit -15) as recent versions do
    assert proc.returncode in (0, -15)
    log = proc.stdout.read().decode()
    assert '"handler": "/v1/classify"' in log and "padam" not in log


def test_server_process_refuses_model_without_labels(tmp_path, server_env):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "aduan-tfidf"}')
    proc = subprocess.run(
        [AD, "serve", "--model", str(tmp_path / "m"), "--port", str(free_port())],
        env={**os.environ, **server_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "config.json does not contain heads" in proc.stderr


def test_server_process_refuses_corrupt_weights(tiny_model, tmp_path, server_env):
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_model, broken)
    (broken / "tfidf.json").write_text("{not json")
    write_manifest(broken)  # the damage re-signed: the loader itself must find it
    proc = subprocess.run(
        [AD, "serve", "--model", str(broken), "--port", str(free_port())],
        env={**os.environ, **server_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "corrupt weights" in proc.stdout + proc.stderr


def test_server_process_reloads_the_registry_on_sighup_under_load(
    tiny_model, tiny_model_v2, server_env, tmp_path
):
    """`aduan serve --registry`: promote v2, send SIGHUP; clients running all along get no
    failed request and each answer names one version, in its body and its header."""
    import signal
    import threading

    from aduan.model.registry import Registry
    from tests.conftest import add_version

    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1")
    add_version(registry, tiny_model_v2, "v2")
    registry.promote("v1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [AD, "serve", "--registry", str(registry.root), "--port", str(port)],
        # a pointer check once an hour: only the signal can explain a quick switch
        env={**os.environ, **server_env, "ADUAN_RELOAD_INTERVAL_S": "3600"},
        stdout=(tmp_path / "server.log").open("wb"),  # a pipe would fill up under load
        stderr=subprocess.STDOUT,
    )
    answers, errors, stop = [], [], threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        f"{base}/v1/classify",
                        json={
                            "items": [{"text": "lampu PJU padam"}, {"text": "bansos belum cair"}]
                        },
                    )
                    answers.append(
                        (
                            response.status_code,
                            response.headers.get("x-model-version"),
                            response.json().get("model_version"),
                        )
                    )
                except Exception as exc:
                    errors.append(exc)

    try:
        wait_http_ready(base, proc)
        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        registry.promote("v2")
        started = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        while httpx.get(f"{base}/v1/info", timeout=5).json()["model_version"] != "v2":
            assert time.monotonic() - started < 10, "SIGHUP did not reload"
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(15)
        assert proc.poll() is None  # SIGHUP reloaded, it did not end the process
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=20)
    assert errors == []
    assert answers and all(status == 200 for status, _, _ in answers)
    assert all(header == body for _, header, body in answers)
    assert {body for _, _, body in answers} == {"v1", "v2"}
    log = (tmp_path / "server.log").read_text()
    assert "SIGHUP" in log and "padam" not in log
    print(f"\n{len(answers)} requests across a SIGHUP reload, 0 failed")
