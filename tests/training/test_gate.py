"""The promotion gate: the windows a candidate trains, calibrates and is judged on, the rows
both models are judged on, the checks and the report."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.registry import Registry
from aduan.training.data import DataError
from aduan.training.gate import (
    GateConfig,
    Windows,
    agency_deltas,
    decide,
    evaluation_rows,
    plan_windows,
    render_table,
)
from tests.conftest import add_version

runner = CliRunner()


def _dates(per_month: dict[str, int]) -> pd.Series:
    days = [f"{month}-{1 + i % 27:02d}" for month, n in per_month.items() for i in range(n)]
    return pd.Series(pd.to_datetime(days))


def test_gate_windows_hold_out_the_newest_month():
    dates = _dates({"2023-01": 50, "2023-02": 50, "2023-03": 50, "2023-04": 50, "2023-05": 40})
    gate = GateConfig(min_eval_rows=30, min_valid_rows=30)
    assert plan_windows(dates, gate) == Windows(
        train_until="2023-02-28",
        valid_from="2023-03-01",
        valid_until="2023-04-30",
        eval_from="2023-05-01",
        eval_until="2023-05-27",
    )


def test_gate_windows_grow_over_thin_months_and_skip_empty_ones():
    # May has only a few feedback rows: April joins the evaluation window; no row in March.
    dates = _dates({"2022-12": 80, "2023-01": 80, "2023-02": 80, "2023-04": 60, "2023-05": 5})
    windows = plan_windows(dates, GateConfig(min_eval_rows=50, min_valid_rows=100))
    assert (windows.eval_from, windows.eval_until) == ("2023-04-01", "2023-05-05")
    assert (windows.valid_from, windows.valid_until) == ("2023-01-01", "2023-03-31")
    assert windows.train_until == "2022-12-31"


def test_gate_windows_need_months_to_train_on():
    with pytest.raises(DataError, match="no months left to train on"):
        gate = GateConfig(min_eval_rows=50, valid_months=1, min_valid_rows=50)
        plan_windows(_dates({"2023-04": 100, "2023-05": 100}), gate)
    with pytest.raises(DataError, match="min_eval_rows"):
        plan_windows(_dates({"2023-05": 10}), GateConfig(min_eval_rows=50))


def test_gate_evaluation_rows_leave_out_what_a_model_learned_from():
    frame = pd.DataFrame(
        {
            "created_at": pd.to_datetime(
                ["2023-03-30", "2023-04-02", "2023-04-10", "2023-04-11", "2023-04-20"]
            ),
            "text": ["lama", "baru satu", "lama", "baru dua", "baru dua"],
        }
    )
    windows = Windows("2023-01-31", "2023-02-01", "2023-03-31", "2023-04-01", "2023-04-20")
    gate = GateConfig(min_eval_rows=1)
    rows, start = evaluation_rows(frame, windows, None, gate)
    # the re-posted "lama" and the second "baru dua" are left out
    assert rows["text"].tolist() == ["baru satu", "baru dua"] and start == "2023-04-01"
    rows, start = evaluation_rows(frame, windows, "2023-04-05", gate)
    assert rows["text"].tolist() == ["baru dua"] and start == "2023-04-06"
    with pytest.raises(DataError, match="learned from rows up to 2023-04-30"):
        evaluation_rows(frame, windows, "2023-04-30", gate)


def _head(accuracy, macro_f1, auto, per_class=None):
    return {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "auto_route_accuracy": auto,
        "per_class": per_class or {},
    }


def test_gate_checks_allow_the_margins_and_no_more():
    gate = GateConfig(max_accuracy_drop=0.01, max_macro_f1_drop=0.02, route_tolerance=0.02)
    live = _head(0.80, 0.60, 0.96)
    within = decide(_head(0.791, 0.581, 0.94), live, 0.95, gate)
    assert all(c.passed for c in within)
    worse = decide(_head(0.78, 0.57, 0.92), live, 0.95, gate)
    assert [c.name for c in worse if not c.passed] == [
        "agency accuracy",
        "agency macro-F1",
        "auto-route accuracy",
    ]
    assert "0.780 is more than 0.010 below the live model's 0.800" in worse[0].note
    first = decide(_head(0.5, 0.3, 0.96), None, 0.95, gate)  # no live model: the promise only
    assert [c.name for c in first] == ["auto-route accuracy"] and first[0].passed
    nothing_routed = decide(_head(0.8, 0.6, None), live, 0.95, gate)
    assert nothing_routed[-1].passed and "routes nothing" in nothing_routed[-1].note


def test_gate_agency_deltas_put_the_largest_losses_first():
    live = _head(0, 0, 0, {"A": {"f1": 0.9, "recall": 0.9, "support": 10}, "B": {"f1": 0.5}})
    candidate = _head(0, 0, 0, {"A": {"f1": 0.6, "recall": 0.5, "support": 10}, "C": {"f1": 0.7}})
    deltas = agency_deltas(candidate, live)
    assert [(d["agency"], round(d["delta_f1"], 3)) for d in deltas] == [
        ("B", -0.5),
        ("A", -0.3),
        ("C", 0.7),
    ]


def test_retrain_fails_when_no_month_is_newer_than_the_live_model(
    tiny_model, complaints_csv, tmp_path
):
    """The live model learned from every month of this file: nothing can be judged honestly,
    so retrain fails (exit 2) and the pointer stays."""
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1")
    registry.promote("v1")
    result = runner.invoke(
        app,
        [
            "retrain",
            "--data",
            str(complaints_csv),
            "--registry",
            str(registry.root),
            "--gate",
            "min_eval_rows=20",
            "--gate",
            "min_valid_rows=20",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "retrain failed" in result.output and "learned from rows up to" in result.output
    assert registry.live() == "v1" and registry.names() == ["v1"]
    bad = runner.invoke(app, ["retrain", "--data", str(complaints_csv), "--gate", "nope=1"])
    assert bad.exit_code == 2 and "unknown setting 'nope'" in bad.output


def test_gate_table_says_why_a_candidate_was_refused():
    report = {
        "candidate": "v2",
        "live": "v1",
        "outcome": "refused",
        "evaluation": {"rows": 120, "from": "2023-04-01", "until": "2023-04-28"},
        "checks": [
            {
                "name": "agency accuracy",
                "candidate": 0.5,
                "compared_with": 0.9,
                "limit": 0.89,
                "passed": False,
                "note": "agency accuracy 0.500 is more than 0.010 below the live model's 0.900",
            }
        ],
        "figures": {"live": None, "candidate": None},
        "agency_deltas": [],
        "reasons": ["agency accuracy 0.500 is more than 0.010 below the live model's 0.900"],
    }
    table = render_table(report)
    assert "REFUSED" in table and "| agency accuracy | 0.500 | 0.900 | 0.890 | FAIL |" in table
    assert "Refused: agency accuracy 0.500" in table
    json.dumps(report)  # the report is plain JSON


def test_retrain_into_an_empty_registry_promotes_a_candidate_that_keeps_the_promise(tmp_path):
    from tests.conftest import make_complaints

    frame = make_complaints()
    april = make_complaints(60, seed=4)
    april["created_at"] = april["created_at"].str.replace(r"^\d{4}-\d{2}", "2023-04", regex=True)
    april["text"] = april["text"] + " april"
    data = tmp_path / "complaints.csv"
    pd.concat([frame, april]).to_csv(data, index=False)
    registry = Registry(tmp_path / "reg")
    result = runner.invoke(
        app,
        [
            "retrain",
            "--data",
            str(data),
            "--registry",
            str(registry.root),
            "--set",
            "tfidf.min_df=1",
            "--set",
            "min_agency_rows=5",
            "--gate",
            "min_eval_rows=50",
            "--gate",
            "min_valid_rows=50",
        ],
    )
    assert result.exit_code == 0, result.output
    [version] = registry.names()
    assert registry.live() == version
    report = json.loads((registry.report_dir(version) / "comparison.json").read_text())
    assert report["live"] is None and report["figures"]["live"] is None
    assert [c["name"] for c in report["checks"]] == ["auto-route accuracy"]
    assert report["windows"]["eval_from"] == "2023-04-01" and report["evaluation"]["rows"] == 60
    assert report["windows"]["valid_from"] == "2023-02-01"


def test_gate_calibrates_on_the_presets_valid_months_unless_told():
    dates = _dates({"2023-01": 50, "2023-02": 50, "2023-03": 50, "2023-04": 50, "2023-05": 40})
    gate = GateConfig(min_eval_rows=30, min_valid_rows=30)
    assert plan_windows(dates, gate, valid_months=1).valid_from == "2023-04-01"
    assert plan_windows(dates, gate, valid_months=3).valid_from == "2023-02-01"
    told = GateConfig(min_eval_rows=30, min_valid_rows=30, valid_months=2)
    assert plan_windows(dates, told, valid_months=3).valid_from == "2023-03-01"


def test_gate_windows_and_the_train_split_agree_on_months_present():
    # the candidate's split, planned like `aduan train`'s on the rows before the gate's month
    from aduan.training.data import plan_split

    dates = _dates({"2023-01": 50, "2023-02": 50, "2023-04": 50, "2023-05": 40})  # no March
    windows = plan_windows(dates, GateConfig(min_eval_rows=30, min_valid_rows=30))
    before = dates[dates < pd.Timestamp(windows.eval_from)]
    split = plan_split(before, valid_months=2)
    assert (split.train_until, split.valid_from) == (windows.train_until, windows.valid_from)
