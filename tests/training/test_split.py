"""The time split comes from the data: the newest `valid_months` months present validate,
the months before train, the refit sees every row, and no row is left out without a word."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.training.data import DataError, plan_split
from tests.conftest import make_complaints

TINY = ["--set", "tfidf.min_df=1", "--set", "min_agency_rows=5"]


def _dates(*days: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(days)))


def test_split_validates_on_the_newest_months_present_a_partial_one_included():
    dates = _dates("2023-01-03", "2023-02-10", "2023-03-31", "2023-04-02", "2023-05-12")
    split = plan_split(dates, valid_months=2)
    assert (split.train_until, split.valid_from, split.valid_until) == (
        "2023-03-31",
        "2023-04-01",
        "2023-05-12",
    )
    assert "2023-04..2023-05" in split.basis and "2023-05 partial" in split.basis


def test_split_skips_months_without_rows_and_honours_overrides():
    dates = _dates("2022-11-05", "2023-01-09", "2023-03-01")  # no December, no February
    assert plan_split(dates, valid_months=1).valid_from == "2023-03-01"
    assert plan_split(dates, valid_months=2).train_until == "2022-12-31"
    given = plan_split(dates, train_until="2022-12-15")
    assert (given.train_until, given.valid_from, given.basis) == (
        "2022-12-15",
        "2022-12-16",
        "given",
    )
    assert plan_split(dates, valid_from="2023-02-01").train_until == "2023-01-31"
    with pytest.raises(DataError, match="spans 3 month"):
        plan_split(dates, valid_months=3)


def _newer_export(path: Path) -> Path:
    """120 synthetic complaints dated April-May 2023: past the old hard-coded split."""
    frame = make_complaints(120, seed=11)
    frame["text"] = frame["text"] + " laporan baru"
    frame["created_at"] = [f"2023-{4 + i % 2:02d}-{1 + i % 27:02d} 09:00:00" for i in range(120)]
    frame.to_csv(path, index=False)
    return path


def test_train_learns_from_rows_past_the_old_hard_coded_dates(complaints_csv, tmp_path, caplog):
    newer = _newer_export(tmp_path / "april-may.csv")
    output = tmp_path / "m"
    args = ["train", "--data", str(complaints_csv), "--data", str(newer), "--output", str(output)]
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, [*args, *TINY])
    assert result.exit_code == 0, result.output
    config = json.loads((output / "config.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert config["trained_on"]["until"] == "2023-05-27"  # the newest row, not 2023-03-31
    assert config["trained_on"]["rows"] == 360 + 120
    assert metrics["split"]["valid_from"] == "2023-04-01"
    assert metrics["split"]["train_until"] == "2023-03-31"
    assert config["split"]["validation"] == ["2023-04-01", "2023-05-27"]
    assert metrics["data"]["excluded"] == {}
    saved = json.loads((output / "training_config.json").read_text())
    assert saved["valid_from"] == "2023-04-01" and saved["valid_months"] == 2
    card = (output / "README.md").read_text()
    assert "validate 2023-04-01..2023-05-27 (newest 2 month(s) present" in card
    assert "rows left out: none" in card


def test_train_says_how_many_rows_it_left_out_and_why(complaints_csv, tmp_path, caplog):
    frame = pd.read_csv(complaints_csv)
    frame = pd.concat([frame, frame.iloc[:4]], ignore_index=True)  # 4 exact duplicates
    frame.loc[len(frame)] = {**frame.iloc[5].to_dict(), "text": "", "id": 999}  # no text
    data = tmp_path / "with-dups.csv"
    frame.to_csv(data, index=False)
    output = tmp_path / "m"
    # a gap between the training and validation months: December is in neither
    split = ["--train-until", "2022-11-30", "--valid-from", "2023-01-01"]
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(
            app, ["train", "--data", str(data), "--output", str(output), *TINY, *split]
        )
    assert result.exit_code == 0, result.output
    excluded = json.loads((output / "metrics.json").read_text())["data"]["excluded"]
    december = int(pd.to_datetime(frame["created_at"]).dt.month.eq(12).sum())
    assert excluded["duplicate text (the earliest row kept)"] == 4
    assert excluded["no usable text or agency"] == 1
    assert excluded["dated between train_until and valid_from"] == december > 0
    assert f"{december} row(s) left out: dated between train_until and valid_from" in caplog.text
    card = (output / "README.md").read_text()
    assert f"{december} dated between train_until and valid_from" in card
    assert "4 duplicate text" in card


def test_train_valid_months_option_and_bad_date(complaints_csv, tmp_path):
    output = tmp_path / "m"
    base = ["train", "--data", str(complaints_csv), "--output", str(output), *TINY]
    result = CliRunner().invoke(app, [*base, "--valid-months", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["split"]["valid_from"] == "2023-03-01"
    bad = CliRunner().invoke(app, [*base, "--train-until", "31/01/2023"])
    assert bad.exit_code == 2 and "--train-until: expected a date as YYYY-MM-DD" in bad.output
    both = CliRunner().invoke(app, [*base, "--valid-months", "1", "--valid-from", "2023-03-01"])
    assert both.exit_code == 2 and "one or the other" in both.output


@pytest.mark.parametrize("name", ["feedback.csv", "feedback.jsonl"])
def test_rows_of_a_feedback_export_are_marked_as_corrections(tmp_path, name):
    from aduan.training.data import load_complaints

    frame = make_complaints(12)
    frame["predicted_agency"] = "Dinas Sosial"  # what `aduan feedback export` adds
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    assert load_complaints(path)["feedback"].all()
    plain = tmp_path / "plain.csv"
    frame.drop(columns=["predicted_agency"]).to_csv(plain, index=False)
    assert not load_complaints(plain)["feedback"].any()


def test_split_months_are_the_complaints_local_months(tmp_path):
    from aduan.training.data import _parse_dates

    frame = pd.DataFrame(
        {
            "text": ["a", "b"],
            "created_at": ["2023-04-01T03:00:00+07:00", "2023-03-31T23:00:00+07:00"],
            "source_row": [2, 3],
        }
    )
    months = _parse_dates(frame, tmp_path / "x.csv", "created_at").dt.to_period("M")
    assert [str(m) for m in months] == ["2023-04", "2023-03"]
