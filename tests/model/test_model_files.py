"""Model files that are missing, truncated, tampered with or pickled are refused at start
(`aduan serve`, the app's start-up) and at reload (`POST /v1/admin/reload`), with a message
that names the file; the old model keeps serving after a refused reload."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aduan.model.artifacts import ModelDirError, verify_model_dir, write_manifest
from aduan.model.registry import Registry
from aduan.service.app import create_app
from aduan.service.settings import Settings
from tests.conftest import add_version
from tests.figures import record
from tests.service.test_server_process import AD, free_port

ADMIN = {"Authorization": "Bearer adm-files"}


def _missing(d: Path) -> str:
    (d / "tfidf.safetensors").unlink()
    return "tfidf.safetensors: required file is missing"


def _truncated(d: Path) -> str:
    data = (d / "tfidf.safetensors").read_bytes()
    (d / "tfidf.safetensors").write_bytes(data[: len(data) // 2])
    return "tfidf.safetensors: "


def _tampered(d: Path) -> str:
    # same size, one weight changed: only the checksum can tell
    path = d / "tfidf.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    return "tfidf.safetensors: its sha256 differs from manifest.json"


def _vocabulary_edited(d: Path) -> str:
    spec = json.loads((d / "tfidf.json").read_text())
    first = next(iter(spec["vectorizers"].values()))
    first["vocabulary"][0] = "diganti"
    (d / "tfidf.json").write_text(json.dumps(spec))
    return "tfidf.json: "


def _pickled_weights(d: Path) -> str:
    # a pickle where the weights are expected, the manifest forged to match it
    (d / "tfidf.safetensors").write_bytes(pickle.dumps({"coef": [1.0]}, protocol=4))
    (d / "manifest.json").unlink()
    write_manifest(d)
    return "tfidf.safetensors: a pickle-based file"


def _pickle_beside(d: Path) -> str:
    (d / "model.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    return "model.pkl: a pickle-based file"


def _manifest_missing_file(d: Path) -> str:
    (d / "locations.json").unlink()
    return "locations.json: listed in manifest.json but missing"


def _config_edited(d: Path) -> str:
    # a threshold lowered by hand: every prediction would route automatically
    config = json.loads((d / "config.json").read_text())
    config["thresholds"] = {head: 0.0 for head in config["thresholds"]}
    (d / "config.json").write_text(json.dumps(config))
    return "config.json: "


def _signed_config(d: Path, **entries: object) -> None:
    config = json.loads((d / "config.json").read_text())
    config.update(entries)
    (d / "config.json").write_text(json.dumps(config))
    write_manifest(d)  # the manifest forged to match


def _encoder_outside(d: Path) -> str:
    _signed_config(d, encoder="../../elsewhere/encoder")
    return "config.json: encoder: '../../elsewhere/encoder' points outside the model directory"


def _onnx_outside(d: Path) -> str:
    _signed_config(d, onnx={"file": "/tmp/evil.onnx", "int8": "/tmp/evil.onnx"})
    return "config.json: onnx.file: '/tmp/evil.onnx' points outside the model directory"


def _pickle_in_plots(d: Path) -> str:
    (d / "plots").mkdir(exist_ok=True)
    (d / "plots" / "confusion.png").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    write_manifest(d)
    return "plots/confusion.png: a pickle-based file"


def _pickle_hidden(d: Path) -> str:
    (d / ".cache").mkdir()
    (d / ".cache" / "state.bin").write_bytes(pickle.dumps([1], protocol=2))
    return ".cache/state.bin: a pickle-based file"


def _file_added(d: Path) -> str:
    (d / "added_tokens.json").write_text('{"lampu": 0}')
    return "added_tokens.json: not recorded in manifest.json"


def _manifest_deleted(d: Path) -> str:
    (d / "manifest.json").unlink()
    return "manifest.json: missing, so no file of the directory can be checked"


def _link_outside(d: Path) -> str:
    (d / "locations.json").unlink()
    (d / "locations.json").symlink_to("/etc/hostname")
    return "locations.json: a link to /etc/hostname, outside the directory"


DAMAGE: dict[str, Callable[[Path], str]] = {
    "missing": _missing,
    "truncated": _truncated,
    "tampered": _tampered,
    "vocabulary edited": _vocabulary_edited,
    "pickle as weights": _pickled_weights,
    "pickle beside": _pickle_beside,
    "file listed but gone": _manifest_missing_file,
    "config.json edited": _config_edited,
    "encoder path outside": _encoder_outside,
    "onnx path outside": _onnx_outside,
    "pickle in plots/": _pickle_in_plots,
    "pickle in a hidden folder": _pickle_hidden,
    "file added": _file_added,
    "manifest deleted": _manifest_deleted,
    "link outside": _link_outside,
}


def _damaged(
    source: Path, tmp_path: Path, name: str, version: str | None = None
) -> tuple[Path, str]:
    """A copy of `source` (renamed to `version`, re-signed, when given), then damaged."""
    target = tmp_path / "".join(c if c.isalnum() else "-" for c in name)
    shutil.copytree(source, target)
    if version is not None:
        _signed_config(target, model_version=version)
    return target, DAMAGE[name](target)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_model_files_refused_at_start_naming_the_file(tiny_model, gazetteer_csv, tmp_path, damage):
    broken, expected = _damaged(tiny_model, tmp_path, damage)
    with pytest.raises(ModelDirError, match=expected.replace(".", r"\.")):
        verify_model_dir(broken)
    app = create_app(Settings(model_dir=broken, gazetteer=gazetteer_csv, data_dir=tmp_path / "v"))
    with pytest.raises(ModelDirError, match=expected.replace(".", r"\.")), TestClient(app):
        pass


def test_model_files_serve_refuses_a_tampered_directory_before_binding(
    tiny_model, gazetteer_csv, tmp_path
):
    broken, expected = _damaged(tiny_model, tmp_path, "tampered")
    proc = subprocess.run(
        [AD, "serve", "--model", str(broken), "--port", str(free_port())],
        env={**os.environ, "ADUAN_GAZETTEER": str(gazetteer_csv)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_model_files_refused_at_reload_and_the_old_model_keeps_serving(
    make_client, tiny_model, tmp_path
):
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1")
    registry.promote("v1")
    client = make_client(registry=registry.root, admin_keys="adm-files", reload_interval_s=3600)
    refused = {}
    for number, damage in enumerate(DAMAGE):
        version = f"broken-{number}"
        broken, expected = _damaged(tiny_model, tmp_path / "src", damage, version)
        # copied in by hand, past `Registry.add`'s own read of config.json
        registry.versions_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(broken, registry.versions_dir / version)
        registry.promote(version, verify=False)  # as a hand-edited pointer would
        response = client.post("/v1/admin/reload", headers=ADMIN)
        assert response.status_code == 409, (damage, response.text)
        error = response.json()["error"]
        assert expected in error and "v1 keeps serving" in error, (damage, error)
        refused[damage] = expected
        answer = client.post("/v1/classify", json={"items": [{"text": "lampu PJU padam"}]})
        assert answer.json()["model_version"] == "v1"
    record(
        "model_files_refused",
        "a model directory with a missing, truncated, tampered (one byte), edited, added or "
        "pickled file (plots/ and hidden folders too), config.json edited or pointing outside, "
        "a link outside or no manifest is refused at start and at reload, naming the file; "
        "the old model keeps serving",
        {
            "damages": len(DAMAGE),
            "refused at start": len(DAMAGE),
            "refused at reload": len(refused),
        },
        "pytest tests/model/test_model_files.py",
    )


def test_model_files_transformer_refuses_a_pickled_encoder(tiny_transformer, tmp_path):
    """transformers would load encoder/pytorch_model.bin (a pickle) when the safetensors
    file is gone; the directory is refused instead."""
    broken = tmp_path / "t"
    shutil.copytree(tiny_transformer, broken)
    (broken / "encoder" / "model.safetensors").unlink()
    (broken / "encoder" / "pytorch_model.bin").write_bytes(pickle.dumps({}, protocol=2))
    (broken / "manifest.json").unlink()
    write_manifest(broken)
    with pytest.raises(ModelDirError, match=r"pytorch_model\.bin: a pickle-based file"):
        verify_model_dir(broken)
    from aduan.model.network import load_encoder

    (broken / "encoder" / "pytorch_model.bin").unlink()
    with pytest.raises(OSError):  # safetensors only: no fallback to any other format
        load_encoder(broken / "encoder")


def test_model_files_models_verify_and_rehash(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from aduan.cli import app

    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    assert CliRunner().invoke(app, ["models", "verify", str(copy)]).exit_code == 0
    (copy / "locations.json").write_text("{}")  # a deliberate edit
    refused = CliRunner().invoke(app, ["models", "verify", str(copy)])
    assert refused.exit_code == 2 and "locations.json" in refused.output
    assert CliRunner().invoke(app, ["models", "rehash", str(copy)]).exit_code == 0
    assert CliRunner().invoke(app, ["models", "verify", str(copy)]).exit_code == 0
    # a directory from before manifests is refused, naming the command that signs it
    (copy / "manifest.json").unlink()
    unsigned = CliRunner().invoke(app, ["models", "verify", str(copy)])
    assert unsigned.exit_code == 2 and f"aduan models rehash {copy}" in unsigned.output
    assert CliRunner().invoke(app, ["models", "rehash", str(copy)]).exit_code == 0
    assert CliRunner().invoke(app, ["models", "verify", str(copy)]).exit_code == 0
    # rehash signs nothing that points outside the directory
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "encoder": "/etc"}))
    outside = CliRunner().invoke(app, ["models", "rehash", str(copy)])
    assert outside.exit_code == 2 and "points outside" in outside.output


def test_model_files_safetensors_whose_header_length_looks_like_pickle_magic_is_accepted(
    tiny_model, tmp_path
):
    # a 640-byte safetensors header is written as 80 02 00 .. (a pickle's PROTO 2 opcode)
    from aduan.model.artifacts import refuse_pickles

    target = tmp_path / "model"
    shutil.copytree(tiny_model, target)
    header = b'{"__metadata__":{}}'.ljust(640)
    (target / "extra.safetensors").write_bytes((640).to_bytes(8, "little") + header)
    assert (target / "extra.safetensors").read_bytes()[:2] == b"\x80\x02"
    refuse_pickles(target)  # no error
    (target / "extra.safetensors").write_bytes(pickle.dumps([1.0], protocol=2))
    with pytest.raises(ModelDirError, match=r"extra\.safetensors: a pickle-based file"):
        refuse_pickles(target)


def test_model_files_an_older_manifest_still_loads_with_a_warning(tiny_model, tmp_path, caplog):
    """A directory written before manifests listed every file (no `coverage`, config.json and
    the card unlisted) is served, its listed files checked, with a warning naming `rehash`;
    a current manifest still refuses an unlisted file."""
    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.pop("coverage")
    for name in ("config.json", "README.md", "metrics.json"):
        manifest["files"].pop(name)
    (old / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        verify_model_dir(old)
    assert "written by an older aduan" in caplog.text and "rehash" in caplog.text
    (old / "tfidf.safetensors").write_bytes(b"x")  # a listed file is still checked
    with pytest.raises(ModelDirError, match=r"tfidf\.safetensors"):
        verify_model_dir(old)
    current = tmp_path / "current"
    shutil.copytree(tiny_model, current)
    (current / "extra.txt").write_text("x")
    with pytest.raises(ModelDirError, match="not recorded"):
        verify_model_dir(current)
