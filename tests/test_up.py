"""`aduan up`: a newcomer's first run answers at once with the baseline and swaps in the
transformer, trained in the background, without a restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import SPLIT, TINY_TRANSFORMER


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def test_up_serves_the_baseline_then_swaps_in_the_trained_preset(
    tmp_path, complaints_csv, tiny_base, gazetteer_csv
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = tmp_path / "models"
    settings = [*SPLIT, *TINY_TRANSFORMER, "--set", f"base={tiny_base}"]
    env = {
        **os.environ,
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(tmp_path / "var"),
        "ADUAN_RELOAD_INTERVAL_S": "0.5",
    }
    command = [sys.executable, "-m", "aduan", "up", "--registry", str(registry)]
    command += ["--preset", "quick", "--port", str(port), "--data", str(complaints_csv)]
    server = subprocess.Popen(
        [*command, *settings], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        versions, deadline = [], time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                info = _get(f"{base}/v1/info")
            except OSError:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                time.sleep(0.2)
                continue
            if not versions or versions[-1] != info["model_type"]:
                versions.append(info["model_type"])
            if info["model_type"] == "aduan-transformer":
                break
            time.sleep(0.3)
        assert versions == ["aduan-tfidf", "aduan-transformer"]
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "aduan",
                "models",
                "list",
                "--registry",
                str(registry),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        presets = {v["preset"]: v["live"] for v in json.loads(listed.stdout)}
        assert presets == {"baseline": False, "quick": True}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_up_promotes_an_existing_version_of_the_preset_without_training(
    tmp_path, tiny_model, gazetteer_csv
):
    # a registry whose only version is not live (say, trained with --no-promote): `up`
    # promotes it and serves it, and trains nothing (no baseline first)
    import shutil

    from aduan.model.registry import Registry

    registry = tmp_path / "models"
    shutil.copytree(tiny_model, registry / "versions" / "baseline-20260101-000000")
    assert Registry(registry).live() is None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(tmp_path / "var"),
    }
    command = [sys.executable, "-m", "aduan", "up", "--registry", str(registry)]
    server = subprocess.Popen(
        [*command, "--preset", "baseline", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = _get(f"http://127.0.0.1:{port}/v1/info")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                assert time.monotonic() < deadline, "the service never answered"
                time.sleep(0.2)
        assert info["model_type"] == "aduan-tfidf"
        store = Registry(registry)
        assert [v.name for v in store.versions()] == ["baseline-20260101-000000"]
        assert store.live() == "baseline-20260101-000000"
    finally:
        server.terminate()
        server.wait(timeout=30)
