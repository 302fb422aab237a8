"""One routing decision for every surface: `Pipeline.run` (the service and `aduan classify`)."""

import json

import pytest
from typer.testing import CliRunner

from aduan.cli import app as cli
from aduan.model.pipeline import Pipeline, decide_route


@pytest.mark.parametrize(
    ("agency", "office", "confident", "expected"),
    [
        ("Dinas Perhubungan", None, True, ("auto", "confident")),
        ("Dinas Perhubungan", None, False, ("review", "low_confidence")),
        ("Lainnya", None, True, ("review", "no_concrete_agency")),
        ("Kelurahan", None, True, ("review", "unit_unresolved")),
        ("Kecamatan", None, True, ("review", "unit_unresolved")),
        ("Kelurahan", "Kelurahan Keputran", True, ("auto", "confident")),
        ("Kecamatan", "Kecamatan Gubeng", False, ("review", "low_confidence")),
    ],
)
def test_pipeline_route_reasons(agency, office, confident, expected):
    assert decide_route(agency, office, confident) == expected


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
