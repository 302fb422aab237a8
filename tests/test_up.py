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

import pytest

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


# `up`'s decisions, without a server: `serve` and the background training are stand-ins.


class _Child:
    def __init__(self, pid: int) -> None:
        self.pid = pid


@pytest.fixture
def quiet_up(monkeypatch):
    """`aduan up` with `serve` recording instead of serving and `Popen` recording the
    training it would start (a sleeping process stands for the child)."""
    import aduan.service.cli

    calls: dict = {"served": [], "started": []}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(aduan.service.cli, "serve", lambda **kw: calls["served"].append(kw))

    def popen(command, **kwargs):
        calls["started"].append(command)
        return _Child(sleeper.pid)

    monkeypatch.setattr(subprocess, "Popen", popen)
    calls["child"] = sleeper.pid
    yield calls
    sleeper.kill()
    sleeper.wait()


def _registry(tmp_path, tiny_model, live_preset="baseline"):
    from aduan.model.registry import Registry
    from tests.conftest import add_version

    store = Registry(tmp_path / "models")
    add_version(store, tiny_model, "b1", "2024-01-01T00:00:00+00:00", preset=live_preset)
    store.promote("b1", verify=False)
    add_version(store, tiny_model, "q1", "2024-02-01T00:00:00+00:00", preset="quick")
    return store


def _judged(store, version: str, outcome: str) -> None:
    report = store.report_dir(version)
    report.mkdir(parents=True)
    (report / "comparison.json").write_text(json.dumps({"outcome": outcome}))


def _up(store, *extra):
    from typer.testing import CliRunner

    from aduan.cli import app

    return CliRunner().invoke(
        app, ["up", "--registry", str(store.root), "--preset", "quick", *extra]
    )


@pytest.mark.parametrize("verdict", ["refused", None])
def test_up_never_promotes_a_version_the_gate_refused_or_never_judged(
    tmp_path, tiny_model, quiet_up, verdict, caplog
):
    store = _registry(tmp_path, tiny_model)
    if verdict:
        _judged(store, "q1", verdict)
    result = _up(store)
    assert result.exit_code == 0, result.output
    assert store.live() == "b1"
    assert quiet_up["started"] == [] and len(quiet_up["served"]) == 1
    assert "not promoting q1" in caplog.text


def test_up_promotes_a_version_the_gate_passed(tmp_path, tiny_model, quiet_up):
    store = _registry(tmp_path, tiny_model)
    _judged(store, "q1", "promoted")
    assert _up(store).exit_code == 0
    assert store.live() == "q1" and quiet_up["started"] == []


def test_up_does_not_undo_an_operators_rollback(tmp_path, tiny_model, quiet_up, caplog):
    store = _registry(tmp_path, tiny_model)
    _judged(store, "q1", "promoted")
    store.promote("q1", verify=False)
    assert store.rollback() == "b1"
    assert _up(store).exit_code == 0
    assert store.live() == "b1"
    assert "not promoting q1 (an operator rolled back from it)" in caplog.text


def test_up_starts_one_training_and_a_second_up_names_it(tmp_path, tiny_model, quiet_up, caplog):
    from aduan.model.registry import Registry
    from tests.conftest import add_version

    store = Registry(tmp_path / "models")
    add_version(store, tiny_model, "b1", preset="baseline")
    store.promote("b1", verify=False)
    assert _up(store).exit_code == 0
    [command] = quiet_up["started"]
    assert command[3:6] == ["train", "--preset", "quick"]
    # a live version was there: the new one is added for the gate or an operator to judge
    assert "--no-promote" in command and "--promote" not in command
    held = store.running()
    assert held["pid"] == quiet_up["child"]  # handed to the child that trains
    assert held["log"] == str(store.root / "logs" / "train-quick.log")
    second = _up(store)
    assert second.exit_code == 0, second.output
    assert len(quiet_up["started"]) == 1  # no second training
    assert f"pid {quiet_up['child']}" in caplog.text and "train-quick.log" in caplog.text
    assert len(quiet_up["served"]) == 2  # the live version serves meanwhile


def test_up_with_nothing_live_while_another_trains_exits_naming_it(tmp_path, quiet_up):
    from aduan.model.registry import Registry

    store = Registry(tmp_path / "models")
    store.root.mkdir()
    (store.root / "training.json").write_text(
        json.dumps({"pid": quiet_up["child"], "preset": "baseline", "log": "/tmp/b.log"})
    )
    result = _up(store)
    assert result.exit_code == 2
    assert f"pid {quiet_up['child']}" in result.output and "/tmp/b.log" in result.output
    assert quiet_up["served"] == [] and quiet_up["started"] == []


def test_up_restarts_a_stopped_training_over_its_stand_in_and_lets_it_promote(
    tmp_path, tiny_model, quiet_up
):
    # the first `up` put its baseline live as a stand-in and was stopped while `quick`
    # trained: the next `up` starts that training again, and the child may promote it
    from aduan.model.registry import Registry
    from tests.conftest import add_version

    store = Registry(tmp_path / "models")
    add_version(store, tiny_model, "b1", preset="baseline")
    store.promote("b1", verify=False, stand_in=True)
    assert _up(store).exit_code == 0
    [command] = quiet_up["started"]
    assert "--no-promote" not in command and "--promote" not in command
    # an operator's promotion (or rollback) ends the stand-in: then nothing goes live ungated
    add_version(store, tiny_model, "b2", preset="baseline")
    store.promote("b2", verify=False)
    assert not store.stand_in()
    assert store.rollback() == "b1" and not store.stand_in()


def test_train_version_replaces_only_a_stand_in_by_default(tmp_path, tiny_model, monkeypatch):
    from aduan.model.registry import Registry
    from aduan.training import train as train_module
    from aduan.training.config import load_config
    from tests.conftest import add_version

    store = Registry(tmp_path / "models")

    def copy_model(config, output, model_version, **kwargs):
        # what `train` would write, without training: the tiny model under the new name
        add_version(store, tiny_model, model_version, preset="baseline")
        store.path(model_version).rename(output)
        return {}

    monkeypatch.setattr(train_module, "train", copy_model)
    add_version(store, tiny_model, "b1", preset="baseline")
    store.promote("b1", verify=False, stand_in=True)
    config = load_config("baseline")
    first, _ = train_module.train_version(config, store, lock=False)
    assert store.live() == first and not store.stand_in()
    second, _ = train_module.train_version(config, store, lock=False)
    # a live version that is no stand-in stays
    assert store.live() == first and second in store.names()
