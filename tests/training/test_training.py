"""End-to-end: train, evaluate and classify through the CLI, as a user runs them."""

import json

import numpy as np
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.artifacts import read_config
from aduan.model.classifier import ComplaintClassifier
from aduan.training.config import load_config

runner = CliRunner()


def test_train_writes_a_self_describing_model_directory(tiny_model):
    for name in (
        "config.json",
        "training_config.json",
        "metrics.json",
        "README.md",
        "taxonomy.yaml",
        "locations.json",
        "tfidf.json",
        "tfidf.safetensors",
        "plots/confusion_agency.png",
        "plots/confusion_category.png",
    ):
        assert (tiny_model / name).is_file(), name
    config = read_config(tiny_model)
    assert config["model_type"] == "aduan-tfidf"
    assert "Kelurahan" in config["heads"]["agency"]["label2id"]
    metrics = json.loads((tiny_model / "metrics.json").read_text())
    agency = metrics["validation"]["agency"]
    assert agency["accuracy"] > 0.9  # the synthetic phrases are easy to learn
    assert agency["auto_route_coverage"] > 0 and agency["auto_route_accuracy"] >= 0.95
    resolved = json.loads((tiny_model / "training_config.json").read_text())
    assert resolved["preset"] == "baseline" and resolved["tfidf"]["min_df"] == 1
    assert "## Validation metrics" in (tiny_model / "README.md").read_text()


def test_train_loaded_model_matches_training_metrics(tiny_model, complaints_csv, tmp_path):
    """A saved-and-loaded model predicts what the trained one measured (weights round-trip)."""
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_model),
            "--data",
            str(complaints_csv),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows"] == 360
    for head in ("agency", "category"):
        assert set(report[head]) >= {
            "accuracy",
            "macro_f1",
            "top3_accuracy",
            "auto_route_coverage",
            "auto_route_accuracy",
            "ece",
        }
        assert report[head]["accuracy"] > 0.9


def test_evaluate_reports_unknown_categories(tiny_model, tmp_path):
    from tests.conftest import make_complaints

    frame = make_complaints(12)
    frame["category"] = "KODE_BARU"
    path = tmp_path / "new.csv"
    frame.to_csv(path, index=False)
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_model),
            "--data",
            str(path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["category"]["accuracy"] == 0.0
    assert "KODE_BARU" in result.output


def test_classify_prints_both_heads_top_k_and_route(tiny_model):
    result = runner.invoke(
        app,
        ["classify", "--model", str(tiny_model), "--top-k", "2", "lampu PJU padam gelap sekali"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    assert out["category"]["label"] == "PJU"
    assert out["agency"]["label"] == "Dinas Perhubungan"
    assert len(out["agency_top_k"]) == 2 and out["route"] in ("auto", "review")


def test_classifier_probabilities_sum_to_one_and_order_matches_classes(tiny_model):
    classifier = ComplaintClassifier.load(tiny_model)
    proba = classifier.predict_proba(["jalan rusak berlubang", "bansos belum cair"])
    for head, matrix in proba.items():
        assert matrix.shape == (2, len(classifier.classes_[head]))
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert classifier.classes_["agency"][proba["agency"][1].argmax()] == "Dinas Sosial"


def test_train_fails_clearly_on_bad_data(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,created_at\nhalo,2023-01-01\n")
    result = runner.invoke(app, ["train", "--data", str(bad), "--output", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "missing column(s) ['agency']" in result.output
    assert not (tmp_path / "m").exists()


def test_config_overrides_are_typed_and_checked():
    config = load_config(
        "baseline",
        {"transformer.epochs": "4", "transformer.bf16": "false", "tfidf.svm_c": "0.1"},
    )
    assert (config.transformer.epochs, config.transformer.bf16, config.tfidf.svm_c) == (
        4,
        False,
        0.1,
    )
    import pytest

    with pytest.raises(ValueError, match="unknown setting"):
        load_config("baseline", {"no_such_thing": "1"})
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("nope")


def test_data_stats_writes_chart(complaints_csv, tmp_path):
    chart = tmp_path / "balance.png"
    result = runner.invoke(app, ["data", "stats", str(complaints_csv), "--plot", str(chart)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["rows"] == 360
    assert stats["classes"]["category"]["PJU"] == 60
    assert chart.stat().st_size > 1000


def test_train_refit_all_learns_from_the_validation_months(tmp_path):
    """With refit_all, the shipped weights have seen the newest complaints; the metrics and
    thresholds still come from the fit on the training months."""
    from tests.conftest import SPLIT, make_complaints

    frame = make_complaints()
    newest = frame["created_at"] >= "2023-02-01"
    trash = newest & (frame["agency"] == "Dinas Lingkungan Hidup")
    # A word that appears only in the validation months, only for one agency.
    frame.loc[trash, "text"] = frame.loc[trash, "text"] + " kresekbaru"
    data = tmp_path / "drift.csv"
    frame.to_csv(data, index=False)
    probability, metrics = {}, {}
    for refit in ("false", "true"):
        output = tmp_path / f"refit-{refit}"
        args = ["train", "--data", str(data), "--output", str(output), *SPLIT]
        settings = ["--set", "tfidf.min_df=1", "--set", f"refit_all={refit}"]
        result = runner.invoke(app, [*args, *settings])
        assert result.exit_code == 0, result.output
        classifier = ComplaintClassifier.load(output)
        agency = classifier.predict_proba(["kresekbaru kresekbaru"])["agency"][0]
        probability[refit] = agency[classifier.classes_["agency"].index("Dinas Lingkungan Hidup")]
        metrics[refit] = json.loads((output / "metrics.json").read_text())["validation"]
    assert read_config(tmp_path / "refit-true")["trained_on"]["rows"] == len(frame)
    assert "trained_on" not in read_config(tmp_path / "refit-false")
    assert "refitted on all 360 rows" in (tmp_path / "refit-true" / "README.md").read_text()
    assert probability["true"] > 0.5 > probability["false"]
    assert metrics["true"]["agency"]["accuracy"] == metrics["false"]["agency"]["accuracy"]
