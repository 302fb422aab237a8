"""`aduan followup sla|deadlines train|report` on a small synthetic history: the offices file
merged, the deadline directory written, the figures as CSV, JSON and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.deadlines import DeadlineModel
from tests.training.test_deadlines import synthetic_history

runner = CliRunner()


@pytest.fixture(scope="module")
def history_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = synthetic_history()
    frame.loc[frame.index % 4 == 0, "agency"] = "Kelurahan Darmo"
    path = tmp_path_factory.mktemp("history") / "history.csv"
    frame.drop(columns=["agency_class", "first_response_hours"]).to_csv(path, index=False)
    return path


def test_followup_sla_merges_into_offices_file(history_csv: Path, tmp_path: Path) -> None:
    offices = tmp_path / "offices.yaml"
    offices.write_text(
        "version: 1\noffices:\n  - name: Kelurahan Darmo\n    staff: [siti]\n    sla_hours: 5\n"
    )
    result = runner.invoke(
        app, ["followup", "sla", "--data", str(history_csv), "--output", str(offices)]
    )
    assert result.exit_code == 0, result.output
    assert "Dinas Sumber Daya Air dan Bina Marga" in result.stdout
    document = yaml.safe_load(offices.read_text())
    assert document["version"] == 1
    by_name = {o["name"]: o for o in document["offices"]}
    assert by_name["Kelurahan Darmo"]["staff"] == ["siti"]
    assert by_name["Kelurahan Darmo"]["sla_hours"] != 5  # measured, replacing the hand value
    assert set(by_name) == {"Kelurahan Darmo", "Dinas Sumber Daya Air dan Bina Marga", "Kelurahan"}
    assert all(isinstance(o["sla_hours"], int) and o["sla_hours"] >= 1 for o in by_name.values())


def test_followup_sla_output_is_an_offices_file_the_service_reads(
    history_csv: Path, tmp_path: Path
) -> None:
    from aduan.service.offices import OfficeBook, parse_offices

    offices = tmp_path / "offices.yaml"  # written from nothing, then merged into a hand-made one
    for before in (None, "offices:\n  - name: Dinas Sosial\n    staff: [siti]\n"):
        if before is not None:
            offices.write_text(before)
        result = runner.invoke(
            app, ["followup", "sla", "--data", str(history_csv), "--output", str(offices)]
        )
        assert result.exit_code == 0, result.output
        parsed = {o.name: o for o in parse_offices(offices.read_text(), offices)}
        measured = yaml.safe_load(offices.read_text())["offices"]
        assert {o["name"] for o in measured} == set(parsed)
        for office in measured:
            assert parsed[office["name"]].sla_hours == office.get("sla_hours", 24.0)
    assert parsed["Dinas Sosial"].staff == ("siti",)
    assert OfficeBook(offices).offices_of("siti") == ["Dinas Sosial"]


def test_followup_sla_refuses_an_offices_file_that_is_not_a_mapping(
    history_csv: Path, tmp_path: Path
) -> None:
    offices = tmp_path / "offices.yaml"
    offices.write_text("- just a list\n")
    result = runner.invoke(
        app, ["followup", "sla", "--data", str(history_csv), "--output", str(offices)]
    )
    assert result.exit_code == 2
    assert "offices" in result.output
    assert offices.read_text() == "- just a list\n"


def test_followup_deadlines_train_writes_a_loadable_directory(
    history_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deadlines"
    result = runner.invoke(
        app, ["followup", "deadlines", "train", "--data", str(history_csv), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["test"]) == {"model", "baseline", "agency_median"}
    model = DeadlineModel.load(out)
    assert model.default == summary["default"]
    assert model.predict_proba(["lampu jalan mati"], ["Kelurahan Darmo"]).shape == (1, 3)


def test_followup_report_writes_csv_json_and_plot(history_csv: Path, tmp_path: Path) -> None:
    csv, js, png = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "r.png"
    result = runner.invoke(
        app,
        [
            "followup", "report", "--data", str(history_csv), "--from", "2022-03-01",
            "--to", "2022-05-01", "--csv", str(csv), "--json", str(js), "--plot", str(png),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(csv)
    assert set(rows["office"]) == {"Kelurahan Darmo", "Dinas Sumber Daya Air dan Bina Marga"}
    assert (rows["period"] == "range").all()
    records = json.loads(js.read_text())
    assert sum(r["received"] for r in records) == rows["received"].sum() > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weekly = runner.invoke(
        app, ["followup", "report", "--data", str(history_csv), "--weekly", "--by", "kecamatan"]
    )
    assert weekly.exit_code == 0, weekly.output
    assert "2022-W" in weekly.stdout and "Gubeng" in weekly.stdout
