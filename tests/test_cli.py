"""The command line scripts well: data on stdout and logs on stderr (plain or JSON, with the
time zone), `--version`, enum choices (a wrong value exits 2), one spelling per option (old
spellings still work, with a warning), `--registry` wherever a model directory is taken,
help texts printed as written, progress bars only on a terminal, and a missing optional
dependency named as the extra to install."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from aduan import __version__
from aduan.cli import app
from aduan.model.registry import Registry
from tests.conftest import add_version

runner = CliRunner()
# 2026-03-12T10:11:12.345+07:00 (or +00:00): the offset is always written
ZONED = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def _aduan(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aduan", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.fixture
def registry(tmp_path, tiny_model):
    store = Registry(tmp_path / "models")
    add_version(store, tiny_model, "baseline-20260101-000000")
    store.promote("baseline-20260101-000000")
    return store


def test_cli_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"aduan {__version__}"


@pytest.mark.parametrize(
    "command",
    [
        ["classify", "--engine", "foo", "x"],
        ["batch", "--engine", "foo", "--input", "a.csv", "--output", "b.csv"],
        ["serve", "--engine", "foo"],
        ["evaluate", "--engine", "foo", "--data", "a.csv"],
        ["export", "--model", "m", "--quantize", "int4"],
        ["--log-format", "xml", "classify", "x"],
    ],
)
def test_cli_rejects_a_value_outside_the_choices(command):
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert "Invalid value" in result.output and "is not one of" in result.output


def test_cli_classify_prints_json_on_stdout_and_logs_on_stderr(tiny_model):
    plain = _aduan("classify", "--model", str(tiny_model), "lampu PJU padam")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["category"]["label"] == "PJU"  # `| python -m json.tool`
    [line] = [x for x in plain.stderr.splitlines() if "loaded aduan-tfidf" in x]
    assert re.match(ZONED + r" INFO aduan\.model\.classifier: loaded", line)

    quiet = _aduan("classify", "--model", str(tiny_model), "x", ADUAN_LOG_LEVEL="warning")
    assert quiet.returncode == 0 and "loaded" not in quiet.stderr

    as_json = _aduan("classify", "--model", str(tiny_model), "x", ADUAN_LOG_FORMAT="json")
    records = [json.loads(x) for x in as_json.stderr.splitlines() if x.startswith("{")]
    loaded = next(r for r in records if "loaded" in r["message"])
    assert re.fullmatch(ZONED, loaded["time"]) and loaded["level"] == "INFO"
    assert loaded["logger"] == "aduan.model.classifier"


def test_cli_formatters_write_the_zone_and_merge_json_messages():
    from aduan.model.logs import JsonFormatter, PlainFormatter

    record = logging.LogRecord(
        "aduan.access", logging.INFO, __file__, 1, '{"status": 200}', (), None
    )
    assert re.fullmatch(
        ZONED + r' INFO aduan\.access: \{"status": 200\}', PlainFormatter().format(record)
    )
    merged = json.loads(JsonFormatter().format(record))
    assert merged["status"] == 200 and re.fullmatch(ZONED, merged["time"])


def test_cli_classify_takes_the_registry_live_version(registry, tmp_path, caplog):
    live = str(registry.live_path())
    with caplog.at_level(logging.INFO, logger="aduan.model.classifier"):
        result = runner.invoke(app, ["classify", "--registry", str(registry.root), "lampu PJU"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["category"]["label"] == "PJU"
    assert f"from {live}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aduan.model.classifier"):
        from_env = runner.invoke(app, ["classify", "x"], env={"ADUAN_REGISTRY": str(registry.root)})
    assert from_env.exit_code == 0, from_env.output
    assert f"from {live}" in caplog.text
    missing = runner.invoke(app, ["classify", "--registry", str(tmp_path / "none"), "x"])
    assert missing.exit_code == 2 and "no such registry folder" in missing.output
    assert "--model" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["classify", "--registry", str(tmp_path / "empty"), "x"])
    assert empty.exit_code == 2 and "no live version" in empty.output and "--model" in empty.output


def test_cli_registry_wherever_a_model_directory_is_taken(registry, complaints_csv, tmp_path):
    root = str(registry.root)
    verified = runner.invoke(app, ["models", "verify", "--registry", root])
    assert verified.exit_code == 0 and "baseline-20260101-000000: ok" in verified.stdout
    evaluated = runner.invoke(
        app, ["evaluate", "--registry", root, "--data", str(complaints_csv), "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["model_version"] == "baseline-20260101-000000"
    done = runner.invoke(
        app,
        [
            "batch",
            "--registry",
            root,
            "--input",
            str(complaints_csv),
            "--output",
            str(tmp_path / "o.csv"),
        ],
    )
    assert done.exit_code == 0 and "360 of 360" in done.stdout


def test_cli_serve_without_a_model_uses_the_models_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("ADUAN_REGISTRY", "ADUAN_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["serve", "--port", "1"])
    assert (
        result.exit_code == 2
        and "cannot serve models: models: no such registry folder" in result.output
    )
    monkeypatch.setenv("ADUAN_MODEL_DIR", str(tmp_path / "elsewhere"))
    result = runner.invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2 and f"cannot serve {tmp_path / 'elsewhere'}" in result.output


def test_cli_former_spellings_still_work_with_a_warning(complaints_csv, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(
            app, ["data", "stats", str(complaints_csv), "--chart", str(tmp_path / "c.png")]
        )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert "--chart is deprecated: use --plot" in caplog.text
    both = ["--plot", str(tmp_path / "a.png"), "--chart", str(tmp_path / "b.png")]
    clash = runner.invoke(app, ["data", "stats", str(complaints_csv), *both])
    assert clash.exit_code == 2
    assert "--chart" not in runner.invoke(app, ["data", "stats", "--help"]).stdout  # hidden


def test_cli_help_texts_keep_their_brackets():
    def help_of(*command: str) -> str:
        return " ".join(runner.invoke(app, [*command, "--help"]).stdout.split())

    assert "pip install 'aduan[ray]'" in help_of("serve")
    assert "pip install 'aduan[ray]'" in help_of("batch")
    assert "pip install 'aduan[train]'" in help_of("export")


def test_cli_a_missing_extra_is_named_not_a_traceback(monkeypatch, capsys):
    import aduan.cli

    def needs_torch() -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(aduan.cli, "app", needs_torch)
    with pytest.raises(SystemExit) as stopped:
        aduan.cli.main()
    assert stopped.value.code == 2
    assert (
        "needs torch, which is not installed: pip install 'aduan[train]'" in capsys.readouterr().err
    )

    def broken() -> None:
        raise ModuleNotFoundError("No module named 'nothing_of_ours'", name="nothing_of_ours")

    monkeypatch.setattr(aduan.cli, "app", broken)
    with pytest.raises(ModuleNotFoundError):  # not an optional dependency: a real bug
        aduan.cli.main()


def test_cli_extras_name_pandas_optional_readers():
    from aduan.model.extras import explain

    pandas_error = ImportError("Missing optional dependency 'pyarrow'. pyarrow is required ...")
    assert "pip install 'aduan[parquet]'" in str(explain(pandas_error, "aduan batch"))
    assert explain(ImportError("cannot import name 'x' from 'numpy'")) is None


def test_cli_progress_logs_lines_off_a_terminal(caplog, monkeypatch):
    from aduan.model import progress as progress_module
    from aduan.model.progress import LogProgress, progress

    assert isinstance(progress(range(3)), LogProgress)  # pytest's stderr is no terminal
    with caplog.at_level(logging.INFO, logger="aduan.progress"):
        bar = LogProgress(range(10), desc="epoch 1/2", unit="batch", every=0.0)
        for _ in bar:
            bar.set_postfix(loss="0.123")
    lines = [r.getMessage() for r in caplog.records if r.name == "aduan.progress"]
    assert len(lines) == 10 and lines[-1].startswith("epoch 1/2: 10/10 batch (")
    assert "loss=0.123" in lines[-1] and "\r" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aduan.progress"):
        slow = LogProgress(total=1000, desc="tokenizing", every=3600.0)
        for _ in range(1000):
            slow.update(1)
        slow.close()
    assert len(caplog.records) == 1  # nothing until the interval passed, then once at the end
    monkeypatch.setattr(progress_module, "on_terminal", lambda: True)
    from tqdm import tqdm

    assert isinstance(progress(range(3), disable=True), tqdm)


def test_cli_serve_keeps_the_root_log_options_unless_settings_name_them(monkeypatch):
    """`aduan -v serve`: the settings reconfigure logging only for what they name explicitly
    (they used to reset the root's DEBUG to INFO)."""
    import logging

    from aduan.model.logs import JsonFormatter, configure_logging
    from aduan.service.cli import settings_logging
    from aduan.service.settings import Settings

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        monkeypatch.delenv("ADUAN_LOG_LEVEL", raising=False)
        monkeypatch.delenv("ADUAN_LOG_FORMAT", raising=False)
        configure_logging("DEBUG", "plain", replace=True)
        settings_logging(Settings())
        assert root.level == logging.DEBUG
        monkeypatch.setenv("ADUAN_LOG_FORMAT", "json")
        settings_logging(Settings())
        assert root.level == logging.DEBUG
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        monkeypatch.setenv("ADUAN_LOG_LEVEL", "WARNING")
        settings_logging(Settings())
        assert root.level == logging.WARNING
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


@pytest.mark.parametrize("command", [["export"], ["models", "rehash"]])
def test_cli_commands_that_rewrite_a_directory_need_it_named(command, registry):
    """`export` rewrites a directory in place and `rehash` re-signs one: never the registry's
    live version by default."""
    result = runner.invoke(app, [*command], env={"ADUAN_REGISTRY": str(registry)})
    assert result.exit_code == 2 and "Missing" in result.output
