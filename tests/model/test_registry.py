"""The model registry on disk: immutable versions, an atomic live pointer, promotion,
rollback, pruning, and the `aduan train --registry` / `aduan models` commands."""

import json
import os
import stat
import threading

import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.registry import Registry, RegistryError
from tests.conftest import SPLIT, add_version

runner = CliRunner()


def test_registry_train_adds_a_read_only_version_and_makes_the_first_live(complaints_csv, tmp_path):
    root = tmp_path / "reg"
    args = ["train", "--data", str(complaints_csv), "--registry", str(root), "--set", "min_df=1"]
    first = runner.invoke(app, [*args, *SPLIT])
    assert first.exit_code == 0, first.output
    registry = Registry(root)
    [v1] = registry.names()
    assert registry.live() == v1
    config = json.loads((registry.path(v1) / "config.json").read_text())
    assert config["model_version"] == v1  # the version name is what the service reports
    mode = (registry.path(v1) / "tfidf.safetensors").stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert not list((root / ".staging").iterdir())
    second = runner.invoke(app, [*args, *SPLIT])
    assert second.exit_code == 0, second.output
    v1_again, v2 = registry.names()
    assert v1_again == v1 and v2 != v1
    assert registry.live() == v1  # a later version waits for promotion


def test_registry_list_json_names_versions_and_the_live_one(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1", "2024-01-01T00:00:00+00:00")
    add_version(registry, tiny_model, "v2", "2024-02-01T00:00:00+00:00")
    registry.promote("v2")
    result = runner.invoke(app, ["models", "list", "--registry", str(registry.root), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(v["version"], v["live"]) for v in listed] == [("v1", False), ("v2", True)]
    v2 = listed[1]
    assert v2["preset"] == "baseline"
    assert v2["data_range"]["from"] == "2022-11-01"
    assert v2["data_range"]["seen_until"] >= "2023-03-01"
    assert v2["metrics"]["agency"]["accuracy"] > 0.9
    table = runner.invoke(app, ["models", "list", "--registry", str(registry.root)])
    assert table.exit_code == 0 and "v2" in table.stdout and "*" in table.stdout


def test_registry_promote_and_rollback_move_the_pointer(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    for i, name in enumerate(("v1", "v2", "v3")):
        add_version(registry, tiny_model, name, f"2024-0{i + 1}-01T00:00:00+00:00")
    assert registry.live() is None
    root = ["--registry", str(registry.root)]
    for name in ("v1", "v2", "v3"):
        result = runner.invoke(app, ["models", "promote", name, *root])
        assert result.exit_code == 0, result.output
    assert registry.live() == "v3"
    assert registry.state()["history"] == ["v1", "v2"]
    assert runner.invoke(app, ["models", "rollback", *root]).exit_code == 0
    assert registry.live() == "v2"
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="no earlier live version"):
        registry.rollback()
    assert registry.live() == "v1"
    missing = runner.invoke(app, ["models", "promote", "v9", *root])
    assert missing.exit_code == 2 and "no version 'v9'" in missing.output


def test_registry_promote_refuses_a_broken_version(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "good")
    registry.promote("good")
    add_version(registry, tiny_model, "broken")
    weights = registry.path("broken") / "tfidf.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["models", "promote", "broken", "--registry", str(registry.root)])
    assert result.exit_code == 2 and "refusing to promote a broken version" in result.output
    assert registry.live() == "good"


def test_registry_prune_keeps_the_live_version_and_the_newest(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    for i in range(5):
        add_version(registry, tiny_model, f"v{i}", f"2024-0{i + 1}-01T00:00:00+00:00")
    registry.promote("v0")
    result = runner.invoke(
        app, ["models", "prune", "--keep", "2", "--registry", str(registry.root)]
    )
    assert result.exit_code == 0, result.output
    assert registry.names() == ["v0", "v3", "v4"]
    assert registry.prune(0, protect=["v4"]) == ["v3"]
    assert registry.prune(0) == ["v4"]
    assert registry.names() == ["v0"]


def test_registry_rollback_skips_pruned_versions(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    for i in range(3):
        add_version(registry, tiny_model, f"v{i}", f"2024-0{i + 1}-01T00:00:00+00:00")
        registry.promote(f"v{i}")
    registry.prune(0)  # keeps the live v2 and v1, the rollback target
    assert registry.names() == ["v1", "v2"]
    assert registry.rollback() == "v1"  # v0, next in the history, was pruned
    with pytest.raises(RegistryError, match="no earlier live version"):
        registry.rollback()
    assert registry.live() == "v1"


def test_registry_versions_are_immutable_and_names_plain(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1")
    with pytest.raises(RegistryError, match="already exists"):
        add_version(registry, tiny_model, "v1")
    for bad in ("../escape", ".hidden", "a/b", ""):
        with pytest.raises(RegistryError, match="not a valid version name"):
            registry.promote(bad)


def test_registry_readers_never_see_a_torn_pointer(tiny_model, tmp_path):
    """Many promotions while readers poll: every read names one of the two versions."""
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "a")
    add_version(registry, tiny_model, "b")
    registry.promote("a", verify=False)
    seen, errors, stop = set(), [], threading.Event()

    def read() -> None:
        reader = Registry(registry.root)
        while not stop.is_set():
            try:
                seen.add(reader.live())
            except Exception as exc:  # a torn or missing pointer
                errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(150):
        registry.promote("b" if i % 2 == 0 else "a", verify=False)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and seen == {"a", "b"}
    assert not [p for p in os.listdir(registry.root) if p.startswith(".live.json.")]


def test_registry_prune_keeps_the_rollback_target(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    for i, name in enumerate(("v1", "v2", "v3", "v4", "v5")):
        add_version(registry, tiny_model, name, f"2024-0{i + 1}-01T00:00:00+00:00")
    registry.promote("v1", verify=False)
    registry.promote("v2", verify=False)  # rollback would return to v1, the oldest
    assert registry.rollback_target() == "v1"
    assert registry.prune(keep=1) == ["v3", "v4"]
    assert registry.rollback() == "v1"
    result = runner.invoke(
        app, ["models", "prune", "--registry", str(registry.root), "--keep", "0"]
    )
    assert result.exit_code == 0, result.output
    # live v1 and nothing to roll back to (v2 was rolled back from): the rest goes
    assert registry.names() == ["v1"]


def test_registry_rollback_withdraws_a_version_until_promoted_by_name(tiny_model, tmp_path):
    registry = Registry(tmp_path / "reg")
    for i, name in enumerate(("v1", "v2")):
        add_version(registry, tiny_model, name, f"2024-0{i + 1}-01T00:00:00+00:00")
    registry.promote("v1", verify=False)
    registry.promote("v2", verify=False)
    registry.rollback()
    assert registry.withdrawn() == {"v2"}
    registry.promote("v2", verify=False)  # an operator's explicit choice
    assert registry.withdrawn() == set()


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(root, pid: int, log: str = "/var/log/train-fast.log") -> None:
    import socket

    root.mkdir(parents=True, exist_ok=True)
    held = {"pid": pid, "host": socket.gethostname(), "preset": "fast", "log": log}
    (root / "training.json").write_text(json.dumps({**held, "since": "2026-12-06T00:00:00"}))


def test_registry_training_lock_refuses_a_second_run_naming_it(tmp_path):
    import subprocess
    import sys

    registry = Registry(tmp_path / "reg")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(registry.root, sleeper.pid)
        busy = rf"pid {sleeper.pid} .*train-fast\.log"
        with pytest.raises(RegistryError, match=busy), registry.training("baseline"):
            pass
        assert registry.running()["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    assert registry.running() is None  # its process is gone


def test_registry_training_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    registry = Registry(tmp_path / "reg")
    dead = _dead_pid()
    _write_lock(registry.root, dead)
    with caplog.at_level("WARNING"), registry.training("baseline", "/tmp/mine.log"):
        held = registry.running()
        assert held["pid"] == os.getpid() and held["log"] == "/tmp/mine.log"
    assert f"taking over the training lock of pid {dead}" in caplog.text
    assert not (registry.root / "training.json").exists()  # released at the end


def test_registry_train_refuses_while_another_run_trains(complaints_csv, tmp_path):
    import subprocess
    import sys

    root = tmp_path / "reg"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(root, sleeper.pid)
        args = ["train", "--data", str(complaints_csv), "--registry", str(root), *SPLIT]
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert f"pid {sleeper.pid}" in result.output and "train-fast.log" in result.output
        assert Registry(root).names() == []
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    "command",
    [
        ["models", "list"],
        ["models", "path"],
        ["models", "rollback"],
        ["models", "prune"],
        ["models", "promote", "v1"],
        ["models", "verify"],
        ["classify", "lampu jalan mati"],
        ["evaluate", "--data", "x.csv"],
        ["serve", "--port", "0"],
    ],
)
def test_registry_read_commands_refuse_a_missing_registry(tmp_path, command):
    missing = tmp_path / "no-such-registry"
    result = runner.invoke(app, [*command, "--registry", str(missing)])
    assert result.exit_code != 0
    assert "no such registry folder" in result.output
    assert not missing.exists()  # and nothing was created there


def test_registry_every_registry_option_reads_aduan_registry(tiny_model, tmp_path, monkeypatch):
    import typer

    from aduan.model.registry import ROOT_ENV

    def walk(command, path: str):
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, command

    checked = []
    for name, command in walk(typer.main.get_command(app), "aduan"):
        for param in command.params:
            if param.name == "registry" and name != "aduan serve":  # serve: its Settings
                assert param.envvar == ROOT_ENV, f"{name} --registry ignores {ROOT_ENV}"
                checked.append(name)
    assert {"aduan train", "aduan retrain", "aduan up", "aduan models list"} <= set(checked)
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1")
    monkeypatch.setenv(ROOT_ENV, str(registry.root))
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["version"] == "v1"
    from aduan.service.settings import Settings

    assert Settings().registry == registry.root


def test_registry_training_lock_of_another_host_expires_without_its_heartbeat(tmp_path):
    import json
    import os
    import time

    from aduan.model import registry as registry_module
    from aduan.model.registry import Registry

    store = Registry(tmp_path / "models")
    store.root.mkdir()
    lock = store.root / "training.json"
    lock.write_text(json.dumps({"pid": 4242, "host": "pod-retrain-x", "preset": "fast"}))
    assert store.running()["host"] == "pod-retrain-x"  # just written: alive
    old = time.time() - registry_module.STALE_S - 1
    os.utime(lock, (old, old))  # the pod was killed: no heartbeat since
    assert store.running() is None
    with store.training("baseline"):
        assert store.running()["pid"] == os.getpid()  # taken over


def test_registry_training_heartbeat_touches_the_lock(tmp_path, monkeypatch):
    import os
    import time

    from aduan.model import registry as registry_module
    from aduan.model.registry import Registry

    monkeypatch.setattr(registry_module, "HEARTBEAT_S", 0.02)
    store = Registry(tmp_path / "models")
    store.root.mkdir()
    lock = store.root / "training.json"
    with store.training("baseline"):
        os.utime(lock, (1.0, 1.0))
        deadline = time.monotonic() + 5
        while lock.stat().st_mtime == 1.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock.stat().st_mtime > 1.0
    assert not lock.exists()
