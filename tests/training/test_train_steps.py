"""A training run's typed steps (`aduan.training.train`): select -> calibrate (once) -> refit
-> save, what ships is what calibration computed, and no experiment on the product path."""

from typing import ClassVar

import numpy as np
import pytest

from aduan.model.artifacts import read_config
from aduan.training import calibration, train
from aduan.training.baseline import TfidfTrainer
from aduan.training.config import load_config

TINY_TFIDF = {"tfidf.min_df": "1", "train_until": "2023-01-31", "valid_from": "2023-02-01"}
TINY_TFIDF |= {"valid_until": "2023-03-31", "min_agency_rows": "5"}


class Recording(TfidfTrainer):
    """The TF-IDF trainer, noting the order of the steps and what the refit was given."""

    steps: ClassVar[list[str]] = []

    def select(self, splits):
        self.steps.append("select")
        return super().select(splits)

    def refit(self, selection, every):
        self.steps.append(f"refit on {len(every.train)}")
        return super().refit(selection, every)


def test_train_runs_select_calibrate_refit_in_order_and_ships_the_calibration(
    complaints_csv, tmp_path, monkeypatch
):
    computed = []
    original = calibration.calibrate

    def spy(*args, **kwargs):
        Recording.steps.append("calibrate")
        computed.append(original(*args, **kwargs))
        return computed[-1]

    monkeypatch.setattr(train, "calibrate", spy)
    Recording.steps = []
    config = load_config(
        "baseline", {**TINY_TFIDF, "refit_all": "true"}, data=[str(complaints_csv)]
    )
    metrics = train.train(config, tmp_path / "m", trainer=Recording)
    assert Recording.steps == ["select", "calibrate", "refit on 360"]
    [fitted] = computed
    shipped = read_config(tmp_path / "m")
    assert shipped["temperature"] == pytest.approx(fitted.temperatures)
    assert shipped["thresholds"] == pytest.approx(fitted.thresholds)
    assert shipped["trained_on"]["rows"] == 360
    for head in ("agency", "category"):
        assert metrics["validation"][head]["accuracy"] == fitted.metrics[head]["accuracy"]
        assert metrics["validation"][head]["threshold"] == fitted.thresholds[head]


def test_train_without_refit_ships_the_selected_model(complaints_csv, tmp_path):
    Recording.steps = []
    config = load_config(
        "baseline", {**TINY_TFIDF, "refit_all": "false"}, data=[str(complaints_csv)]
    )
    train.train(config, tmp_path / "m", trainer=Recording)
    assert Recording.steps == ["select"]
    assert "trained_on" not in read_config(tmp_path / "m")


def test_train_unknown_model_kind_is_refused_naming_the_kinds():
    config = load_config("baseline", {"model_kind": "forest"})
    with pytest.raises(ValueError, match=r"unknown model_kind 'forest'.*'tfidf', 'transformer'"):
        train.kind_trainer(config, train.Path("/nonexistent"))


def test_train_transformer_selects_mixing_once_calibrates_once_and_runs_no_ablation(
    tiny_base, complaints_csv, tmp_path, monkeypatch
):
    """The transformer's default path: mixing weights chosen once (in select, reused by the
    refit), heads calibrated once, on the selection's own validation output, and no
    experiment (the ablation would calibrate every variant)."""
    from aduan.training import finetune
    from aduan.training.experiments import ablation

    def forbidden(*args, **kwargs):
        raise AssertionError("the ablation ran on the product path")

    monkeypatch.setattr(ablation, "ablation", forbidden)
    counts = {"fit_mixing": 0, "calibrate_head": 0}
    for module, name in ((finetune, "fit_mixing"), (calibration, "calibrate_head")):
        original = getattr(module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    overrides = {
        **TINY_TFIDF,
        "refit_all": "true",
        "threads": "1",
        "transformer.epochs": "1",
        "transformer.batch_size": "16",
        "transformer.max_length": "32",
        "transformer.bf16": "false",
        "transformer.frozen_layers": "1",
        "transformer.min_topic_rows": "2",
    }
    config = load_config("quick", overrides, data=[str(complaints_csv)], base=str(tiny_base))
    seen = {}
    original_select, original_calibrate = finetune.TransformerTrainer.select, calibration.calibrate

    def select_spy(self, splits):
        seen["selection"], seen["splits"] = original_select(self, splits), splits
        return seen["selection"]

    def calibrate_spy(logits, splits, target, settings=None):
        seen["calibrated"] = logits
        return original_calibrate(logits, splits, target, settings)

    monkeypatch.setattr(finetune.TransformerTrainer, "select", select_spy)
    monkeypatch.setattr(train, "calibrate", calibrate_spy)
    trained = train.train(config, tmp_path / "m")
    assert counts == {"fit_mixing": 1, "calibrate_head": 2}
    assert "validation_variants" not in trained
    shipped = read_config(tmp_path / "m")
    assert shipped["trained_on"]["refit_epochs"] == shipped["epochs_selected"] == 1
    assert shipped["mixing"] == seen["selection"].mixing  # the refit kept the selection's
    # Calibration saw the selected model's output on the validation rows, as it computes it.
    selection, texts = seen["selection"], seen["splits"].valid["text"].tolist()
    assert seen["calibrated"] is selection.valid_logits
    for head in ("category", "agency"):
        np.testing.assert_allclose(
            selection.valid_logits[head], selection.model.logits(texts)[head], atol=1e-6
        )
