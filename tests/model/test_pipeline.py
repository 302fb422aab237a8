"""One routing decision for every surface: `Pipeline.run` (the service and `aduan classify`)."""

import json

import pytest
from typer.testing import CliRunner

from aduan.cli import app as cli
from aduan.model.classifier import Scored
from aduan.model.pipeline import Pipeline, decide_route


@pytest.mark.parametrize(
    ("agency", "score", "office", "expected"),
    [
        ("Dinas Perhubungan", 0.9, None, ("auto", "confident")),
        ("Dinas Perhubungan", 0.8, None, ("auto", "confident")),  # the threshold itself passes
        ("Dinas Perhubungan", 0.79, None, ("review", "low_confidence")),
        ("Lainnya", 0.99, None, ("review", "no_concrete_agency")),
        ("Kelurahan", 0.99, None, ("review", "unit_unresolved")),
        ("Kecamatan", 0.99, None, ("review", "unit_unresolved")),
        ("Kelurahan", 0.99, "Kelurahan Keputran", ("auto", "confident")),
        ("Kecamatan", 0.5, "Kecamatan Gubeng", ("review", "low_confidence")),
    ],
)
def test_pipeline_route_reasons(agency, score, office, expected):
    assert decide_route(Scored(agency, score), 0.8, office) == expected


def test_pipeline_route_follows_the_models_threshold(tiny_model):
    """The route is decided once, in `Pipeline.run`, from the classifier's scores and its
    threshold: moving the threshold moves the route, the scores stay."""
    pipeline = Pipeline.load(tiny_model)
    items = [("lampu PJU padam gelap", None)]
    [before] = pipeline.run(items)
    score = before.prediction.best("agency").score
    pipeline.classifier.thresholds["agency"] = score
    [at] = pipeline.run(items)
    pipeline.classifier.thresholds["agency"] = min(score + 1e-6, 1.0 + 1e-6)
    [above] = pipeline.run(items)
    assert (at.route, above.route) == ("auto", "review")
    assert above.route_reason == "low_confidence"
    assert at.prediction == above.prediction


def test_pipeline_classify_command_gives_the_service_answer(tiny_model, gazetteer_csv, monkeypatch):
    text = "pelayanan kantor kelurahan lambat sekali"
    pipeline = Pipeline.load(tiny_model, gazetteer_csv)
    pipeline.classifier.thresholds["agency"] = 0.0
    [routed] = pipeline.run([(text, None)])
    assert (routed.route, routed.route_reason) == ("review", "unit_unresolved")
    monkeypatch.setenv("ADUAN_SHARED_DATA", str(gazetteer_csv.parent / "none"))
    result = CliRunner().invoke(cli, ["classify", "--model", str(tiny_model), text])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("{") :])
    assert answer["route"] == "review" and answer["unit"] is None
    assert answer["route_reason"] in ("unit_unresolved", "low_confidence")
