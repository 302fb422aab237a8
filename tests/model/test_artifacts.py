"""The model-directory contract: format version, library versions, the kind registry."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from aduan.model.artifacts import (
    FORMAT_VERSION,
    ModelDirError,
    kind_class,
    library_versions,
    read_config,
    write_manifest,
)
from aduan.model.classifier import ComplaintClassifier


def _copy(tiny_model, tmp_path, **changes):
    target = tmp_path / "m"
    shutil.copytree(tiny_model, target)
    config = json.loads((target / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    write_manifest(target)  # a deliberate edit, re-signed (`aduan models rehash`)
    return target


def test_artifacts_records_format_and_library_versions(tiny_model):
    config = read_config(tiny_model)
    # the third layout (model/layout.py) is what training writes
    assert config["format_version"] == FORMAT_VERSION == 3
    assert config["versions"]["scikit-learn"] == library_versions()["scikit-learn"]


def test_artifacts_directory_written_before_format_versions_still_loads(tiny_model, tmp_path):
    old = _copy(tiny_model, tmp_path, format_version=None)
    texts = ["lampu jalan mati gelap"]
    assert (
        ComplaintClassifier.load(old).predict(texts)[0]
        == ComplaintClassifier.load(tiny_model).predict(texts)[0]
    )


def test_artifacts_refuses_an_unknown_format_version(tiny_model, tmp_path):
    newer = _copy(tiny_model, tmp_path, format_version=4)
    with pytest.raises(ModelDirError, match=r"format_version 4 .*\(1\.\.3\).*upgrade aduan"):
        ComplaintClassifier.load(newer)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_artifacts_reads_every_format_up_to_the_current(tiny_model, tmp_path, version):
    older = _copy(tiny_model, tmp_path, format_version=version)
    assert ComplaintClassifier.load(older).predict(["lampu jalan mati gelap"])


def test_artifacts_warns_naming_a_library_of_another_major_version(tiny_model, tmp_path, caplog):
    other = _copy(tiny_model, tmp_path, versions={"scikit-learn": "0.1.0"})
    with caplog.at_level(logging.WARNING, logger="aduan.model.artifacts"):
        ComplaintClassifier.load(other)
    assert "written with scikit-learn 0.1.0" in caplog.text


def test_artifacts_missing_kind_file_is_named(tiny_model, tmp_path):
    broken = _copy(tiny_model, tmp_path)
    (broken / "tfidf.safetensors").unlink()
    with pytest.raises(ModelDirError, match=r"tfidf\.safetensors: required file is missing"):
        ComplaintClassifier.load(broken)


def test_artifacts_kind_registry_names_each_kind_once():
    for model_type in ("aduan-tfidf", "aduan-transformer"):
        assert kind_class(model_type).model_type == model_type
    with pytest.raises(ModelDirError, match="model_type must be one of"):
        kind_class("aduan-gpt")
