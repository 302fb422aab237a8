"""Training settings (`aduan.training.config`): one section per component in the preset YAML,
dotted `--set` keys, the flat spellings of before the sections accepted with a warning."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.training import config as config_module
from aduan.training.config import (
    CalibrationConfig,
    MixingConfig,
    TfidfConfig,
    TrainConfig,
    TransformerConfig,
    config_from_file,
    load_config,
)
from tests.conftest import SPLIT


def test_config_preset_sections_fill_their_dataclasses_over_the_defaults():
    config = load_config("fast")
    assert isinstance(config.tfidf, TfidfConfig) and isinstance(config.mixing, MixingConfig)
    assert isinstance(config.transformer, TransformerConfig)
    assert (config.model_kind, config.refit_all) == ("transformer", True)
    assert (config.transformer.frozen_layers, config.transformer.export) == (10, "int8")
    assert config.tfidf.class_weight == "balanced"
    assert config.mixing.objective == "metrics"
    assert config.tfidf.svm_c == TfidfConfig.svm_c  # not in the preset: the section's default
    assert config.transformer.dropout == TransformerConfig.dropout


def test_config_dotted_set_overrides_one_section_typed():
    config = load_config(
        "fast", {"tfidf.svm_c": "0.3", "transformer.bf16": "off", "refit_all": "false"}
    )
    assert (config.tfidf.svm_c, config.transformer.bf16, config.refit_all) == (0.3, False, False)
    assert config.transformer.frozen_layers == 10  # the rest of the preset stays
    with pytest.raises(ValueError, match=r"'transformer\.epochs'.*invalid literal"):
        load_config("fast", {"transformer.epochs": "many"})


def test_config_flat_set_key_is_accepted_with_a_deprecation_warning(caplog):
    with caplog.at_level("WARNING", logger="aduan.training.config"):
        config = load_config("baseline", {"svm_c": "0.3", "ensemble_tfidf": "false"})
    assert config.tfidf.svm_c == 0.3 and config.mixing.tfidf is False
    assert "'svm_c' is deprecated; write tfidf.svm_c" in caplog.text
    assert "write mixing.tfidf" in caplog.text


# training/presets/fast.yaml as it was before the sections (main at b54cb26).
OLD_FAST = """
model_kind: transformer
max_length: 128
encoder_layers: 12
frozen_layers: 10
epochs: 4
patience: 1
batch_size: 32
lr_encoder: 3.0e-4
lr_head: 3.0e-3
warmup_ratio: 0.06
bf16: true
class_weight_power: 1.0
class_weight: balanced
topic_head: true
ensemble_tfidf: true
mixing_objective: metrics
export: int8
refit_all: true
"""


def test_config_old_flat_preset_is_read_like_its_sectioned_successor(tmp_path, monkeypatch, caplog):
    sectioned = load_config("fast")
    (tmp_path / "fast.yaml").write_text(OLD_FAST)
    monkeypatch.setattr(config_module, "packaged", lambda package, name: tmp_path)
    with caplog.at_level("WARNING", logger="aduan.training.config"):
        flat = load_config("fast")
    # The old preset predates the threshold method: it keeps the point method it had.
    assert flat == dataclasses.replace(sectioned, calibration=CalibrationConfig())
    assert "flat settings are deprecated" in caplog.text
    assert "mixing_objective -> mixing.objective" in caplog.text


def test_config_unknown_keys_are_refused_naming_them(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown setting 'tfidf\.colour'"):
        load_config("baseline", {"tfidf.colour": "red"})
    with pytest.raises(ValueError, match=r"unknown setting 'colour'"):
        load_config("baseline", {"colour": "red"})
    monkeypatch.setattr(config_module, "packaged", lambda package, name: tmp_path)
    (tmp_path / "odd.yaml").write_text("tfidf:\n  svm_c: 0.1\n  colour: red\nshape: round\n")
    with pytest.raises(ValueError, match=r"\['shape', 'tfidf\.colour'\]"):
        load_config("odd")
    (tmp_path / "flat.yaml").write_text("tfidf: 0.5\n")
    with pytest.raises(ValueError, match="section 'tfidf' must be a mapping"):
        load_config("flat")


def test_config_retired_experiment_settings_point_to_the_experiments(tmp_path, caplog):
    with pytest.raises(ValueError, match="experiments"):
        load_config("fast", {"distill_from": "models/teacher"})
    with pytest.raises(ValueError, match="experiments"):
        load_config("fast", {"prior_correction": "0.25"})
    # A model directory that recorded one is still read (what it was trained with).
    recorded = tmp_path / "training_config.json"
    recorded.write_text(json.dumps({"preset": "quick", "svm_c": 0.2, "prior_correction": 0.25}))
    with caplog.at_level("WARNING", logger="aduan.training.config"):
        config = config_from_file(recorded)
    assert config.tfidf.svm_c == 0.2 and "prior_correction=0.25 is ignored" in caplog.text


def test_config_resolved_sections_are_saved_with_the_model_and_read_back(complaints_csv, tmp_path):
    output = tmp_path / "m"
    args = ["train", "--data", str(complaints_csv), "--output", str(output), *SPLIT]
    result = CliRunner().invoke(app, [*args, "--set", "tfidf.min_df=1", "--set", "tfidf.svm_c=0.3"])
    assert result.exit_code == 0, result.output
    saved = json.loads((output / "training_config.json").read_text())
    assert saved["tfidf"]["svm_c"] == 0.3 and saved["tfidf"]["min_df"] == 1
    assert saved["mixing"] == {"tfidf": True, "objective": "nll"}
    assert saved["train_until"] == "2023-01-31"
    again = config_from_file(output / "training_config.json")
    assert isinstance(again, TrainConfig)
    assert again.tfidf == TfidfConfig(min_df=1, svm_c=0.3)
    assert again.transformer == load_config("baseline").transformer
