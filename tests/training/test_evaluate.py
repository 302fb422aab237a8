"""Honest evaluation and reproducible model directories: the training-period warning and
`--after`, per-class and confusion counts, reliability diagrams, plots only where asked,
provenance without absolute paths, and MLflow tracking off by default."""

import hashlib
import json
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app
from tests.conftest import SPLIT, make_complaints

runner = CliRunner()


@pytest.fixture(scope="module")
def later_csv(tmp_path_factory):
    """The synthetic months the tiny model learned from plus 60 rows from April 2023."""
    april = make_complaints(60, seed=3)
    april["created_at"] = april["created_at"].str.replace(r"^\d{4}-\d{2}", "2023-04", regex=True)
    april["text"] = april["text"] + " april"
    path = tmp_path_factory.mktemp("later") / "later.csv"
    pd.concat([make_complaints(), april]).to_csv(path, index=False)
    return path


def _evaluate(model, data, tmp_path, *extra):
    result = runner.invoke(
        app, ["evaluate", "--model", str(model), "--data", str(data), "--json", *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


def test_evaluate_warns_when_rows_fall_in_the_training_period(tiny_model, later_csv, tmp_path):
    report, result = _evaluate(tiny_model, later_csv, tmp_path)
    assert report["rows"] == 420
    assert report["overlap"]["rows"] == 360
    assert report["overlap"]["seen_until"] == report["data_range"]["seen_until"]
    assert "optimistic" in result.output and "--after" in result.output
    assert report["warnings"] and "360 of 420" in report["warnings"][0]


def test_evaluate_after_keeps_only_newer_rows(tiny_model, later_csv, tmp_path):
    report, result = _evaluate(tiny_model, later_csv, tmp_path, "--after", "2023-03-31")
    assert report["rows"] == 60 and report["excluded_rows"] == 360
    assert report["overlap"]["rows"] == 0 and report["warnings"] == []
    assert "optimistic" not in result.output
    empty = runner.invoke(
        app,
        ["evaluate", "--model", str(tiny_model), "--data", str(later_csv), "--after", "2024-01-01"],
    )
    assert empty.exit_code == 2 and "no rows dated after 2024-01-01" in empty.output


def test_evaluate_json_has_per_class_confusion_and_reliability(tiny_model, later_csv, tmp_path):
    report, _ = _evaluate(tiny_model, later_csv, tmp_path, "--after", "2023-03-31")
    agency = report["agency"]
    dinsos = agency["per_class"]["Dinas Sosial"]
    assert set(dinsos) == {"precision", "recall", "f1", "support"} and dinsos["support"] == 10
    confusion = agency["confusion"]
    assert sum(map(sum, confusion["matrix"])) == 60
    assert len(confusion["matrix"]) == len(confusion["labels"])
    diagonal = sum(confusion["matrix"][i][i] for i in range(len(confusion["labels"])))
    assert diagonal / 60 == pytest.approx(agency["accuracy"])
    bins = agency["reliability"]
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 60
    assert all(b["accuracy"] is None or 0 <= b["accuracy"] <= 1 for b in bins)


def test_evaluate_writes_plots_only_where_asked(tiny_model, later_csv, tmp_path):
    before = sorted(p.name for p in (tiny_model / "plots").iterdir())
    report, _ = _evaluate(tiny_model, later_csv, tmp_path)
    assert "plots" not in report["agency"]
    assert sorted(p.name for p in (tiny_model / "plots").iterdir()) == before
    plots = tmp_path / "figures"
    report, _ = _evaluate(tiny_model, later_csv, tmp_path, "--plot", str(plots))
    assert sorted(p.name for p in plots.iterdir()) == [
        "eval_confusion_agency.png",
        "eval_confusion_category.png",
        "eval_reliability_agency.png",
        "eval_reliability_category.png",
    ]
    assert report["agency"]["plots"]["reliability"].endswith("eval_reliability_agency.png")
    assert sorted(p.name for p in (tiny_model / "plots").iterdir()) == before


def test_train_writes_reliability_diagrams_and_drift_reference(tiny_model):
    for head in ("agency", "category"):
        assert (tiny_model / "plots" / f"reliability_{head}.png").stat().st_size > 1000
    metrics = json.loads((tiny_model / "metrics.json").read_text())
    reference = metrics["reference"]
    assert sum(reference["agency"].values()) == pytest.approx(1.0)
    assert sum(reference["training_agency"].values()) == pytest.approx(1.0)
    assert 0 <= reference["review_share"] <= 1
    assert 0 <= reference["unknown_word_share"] < 0.5  # validation texts share most words
    assert len(metrics["validation"]["agency"]["reliability"]) == 10


def test_train_records_provenance_without_absolute_paths(tiny_model, complaints_csv):
    config = json.loads((tiny_model / "config.json").read_text())
    recorded = config["provenance"]
    [data] = recorded["data"]
    assert data["name"] == "complaints.csv" and data["rows"] == 360
    assert data["sha256"] == hashlib.sha256(complaints_csv.read_bytes()).hexdigest()
    assert recorded["seed"] == 13 and recorded["code"]["aduan"]
    texts = [(tiny_model / name).read_text() for name in ("config.json", "training_config.json")]
    texts += [(tiny_model / "metrics.json").read_text(), (tiny_model / "README.md").read_text()]
    for text in texts:
        assert str(complaints_csv.parent) not in text and "/tmp/" not in text
    assert json.loads(texts[1])["data"] == ["complaints.csv"]
    assert "sha256" in texts[3] and "## Reproduce" in texts[3]


def test_train_names_shared_data_files_relative_to_the_shared_folder(monkeypatch, tmp_path):
    from aduan.training.provenance import SHARED, WORKDIR, portable_path

    shared = tmp_path / "shared"
    (shared / "surabaya").mkdir(parents=True)
    monkeypatch.setenv("ADUAN_SHARED_DATA", str(shared))
    assert portable_path(shared / "surabaya" / "x.csv") == ("surabaya/x.csv", SHARED)
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "exports" / "april.csv") == ("exports/april.csv", WORKDIR)
    assert portable_path("/somewhere/else/feedback.csv")[0] == "feedback.csv"


def test_tracking_is_off_by_default_and_asks_for_the_extra(complaints_csv, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if MLflow were not installed
    base = ["train", "--data", str(complaints_csv), "--set", "tfidf.min_df=1", *SPLIT]
    plain = runner.invoke(app, [*base, "--output", str(tmp_path / "m")])
    assert plain.exit_code == 0, plain.output  # no tracking asked, nothing imported
    asked = runner.invoke(
        app, [*base, "--output", str(tmp_path / "t"), "--mlflow", f"file:{tmp_path}/mlruns"]
    )
    assert asked.exit_code == 2 and "aduan[mlflow]" in asked.output
    assert not (tmp_path / "t").exists()  # refused before hours of training, not after


def test_tracking_logs_a_run_to_mlflow(complaints_csv, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow puts the run's files beside the working directory
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(complaints_csv),
            "--output",
            str(tmp_path / "m"),
            "--set",
            "tfidf.min_df=1",
            *SPLIT,
            "--mlflow",
            uri,
        ],
    )
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(uri)
    [run] = mlflow.search_runs(experiment_names=["aduan"], output_format="list")
    version = json.loads((tmp_path / "m" / "config.json").read_text())["model_version"]
    assert run.data.tags["model_version"] == version
    assert run.data.metrics["agency.accuracy"] > 0.9
    assert run.data.params["preset"] == "baseline"
    assert run.data.params["tfidf.min_df"] == "1"  # sectioned settings, dotted
