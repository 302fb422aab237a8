"""Office figures: a hand-worked week of complaints, and the shared history's figures checked
against an independent pandas/numpy computation on a slice of it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aduan.model.history import load_history
from aduan.model.performance import history_complaints, office_performance, to_records
from aduan.model.resources import default_data

T = pd.Timestamp
SURABAYA = default_data()  # the shared data, where model/resources.py finds it
NAT = pd.NaT


def _hand_worked() -> pd.DataFrame:
    rows = [
        # office, received, first response, closed, due, sent back
        (
            "A",
            T("2023-01-02 10:00"),
            T("2023-01-02 12:00"),
            T("2023-01-04 10:00"),
            T("2023-01-03 10:00"),
            False,
        ),
        ("A", T("2023-01-03 10:00"), NAT, NAT, T("2023-01-04 10:00"), False),
        (
            "A",
            T("2023-01-05 10:00"),
            T("2023-01-07 10:00"),
            T("2023-01-10 10:00"),
            T("2023-01-06 10:00"),
            False,
        ),
        (
            "A",
            T("2023-01-10 10:00"),
            T("2023-01-10 11:00"),
            T("2023-01-10 11:00"),
            T("2023-01-11 10:00"),
            True,
        ),
        ("B", T("2023-01-11 10:00"), T("2023-01-11 20:00"), NAT, NAT, False),
    ]
    columns = ["office", "received_at", "first_response_at", "closed_at", "due_at", "sent_back"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["kecamatan"] = ["Gubeng", "Gubeng", "Tandes", "Tandes", "Gubeng"]
    return frame


def test_performance_hand_worked_weeks() -> None:
    table = office_performance(_hand_worked(), start="2023-01-02", end="2023-01-16")
    rows = {(r["office"], r["period"]): r for r in to_records(table)}
    assert set(rows) == {("A", "2023-W01"), ("A", "2023-W02"), ("B", "2023-W02")}
    week1 = rows[("A", "2023-W01")]
    assert week1["received"] == 3 and week1["acknowledged"] == 2
    assert week1["acknowledged_within_sla"] == pytest.approx(
        1 / 3, abs=1e-4
    )  # only the first on time
    assert week1["first_response_median_h"] == pytest.approx(25.0)  # 2 h and 48 h
    assert week1["close_median_h"] == pytest.approx(84.0)  # 48 h and 120 h
    assert week1["backlog"] == 2  # the unanswered one and the one closed next week
    assert week1["overdue"] == 1  # the late-answered one is answered by the week's end
    week2 = rows[("A", "2023-W02")]
    assert (week2["received"], week2["backlog"], week2["overdue"]) == (1, 1, 1)
    assert week2["sent_back"] == 1 and week2["sent_back_rate"] == 1.0
    b = rows[("B", "2023-W02")]
    assert b["acknowledged_within_sla"] is None  # no deadline: no share
    assert b["backlog"] == 1 and b["overdue"] == 0
    json.dumps(to_records(table))  # JSON-ready as it is


def test_performance_utc_aware_timestamps_give_the_same_figures() -> None:
    naive = _hand_worked()
    aware = naive.copy()
    for column in ("received_at", "first_response_at", "closed_at", "due_at"):
        aware[column] = aware[column].dt.tz_localize("UTC")
    expected = office_performance(naive, start="2023-01-02", end="2023-01-16")
    got = office_performance(aware, start="2023-01-02", end="2023-01-16")
    columns = [c for c in expected if c not in ("period_start", "period_end")]
    pd.testing.assert_frame_equal(got[columns], expected[columns])


def test_performance_range_kecamatan_and_all() -> None:
    frame = _hand_worked()
    whole = office_performance(frame, by=None, weekly=False, start="2023-01-02", end="2023-01-16")
    [row] = to_records(whole)
    assert row["group"] == "all" and row["period"] == "range"
    assert (row["received"], row["backlog"], row["overdue"], row["sent_back"]) == (5, 2, 1, 1)
    by_kecamatan = office_performance(frame, by="kecamatan", weekly=False)
    assert dict(zip(by_kecamatan["kecamatan"], by_kecamatan["received"], strict=True)) == {
        "Gubeng": 3,
        "Tandes": 2,
    }
    with pytest.raises(ValueError, match="due_at"):
        office_performance(frame.drop(columns=["due_at"]))


# The independent computation: the raw file read with pandas alone, the conversion written out.
_BUCKET_H = {"1 Sampai 3 Hari": 48.0, "4 Sampai 7 Hari": 132.0, "Lebih 7 Hari": 240.0}
START, END = T("2022-03-01"), T("2022-06-01")


def _independent(raw: pd.DataFrame, office: str) -> dict[str, float]:
    rows = raw[raw["agency"] == office]
    received = pd.to_datetime(rows["created_at"])
    responded = pd.to_datetime(rows["responded_at"])
    closed = received + pd.to_timedelta(rows["response_days"].map(_BUCKET_H), unit="h")
    closed = pd.Series(np.where(closed < responded, responded, closed), index=rows.index)
    closed = closed.fillna(responded)
    due = received + pd.Timedelta(hours=24)
    new = (received >= START) & (received < END)
    first_h = ((responded - received).dt.total_seconds() / 3600)[new].dropna()
    close_h = ((closed - received).dt.total_seconds() / 3600)[new].dropna()
    open_at_end = (received < END) & ~(closed < END)
    return {
        "received": int(new.sum()),
        "acknowledged_within_sla": float((responded[new] <= due[new]).mean()),
        "first_response_median_h": float(np.percentile(first_h, 50)),
        "first_response_p90_h": float(np.percentile(first_h, 90)),
        "close_median_h": float(np.percentile(close_h, 50)),
        "close_p90_h": float(np.percentile(close_h, 90)),
        "backlog": int(open_at_end.sum()),
        "overdue": int((open_at_end & ~(responded < END) & (due < END)).sum()),
    }


@pytest.mark.skipif(not SURABAYA.is_file(), reason="the shared data is not on this machine")
def test_performance_matches_independent_computation_on_shared_history() -> None:
    raw = pd.read_csv(SURABAYA, usecols=["agency", "created_at", "responded_at", "response_days"])
    raw = raw[pd.to_datetime(raw["created_at"]) < END]
    offices = list(raw["agency"].value_counts().index[:3])
    history = load_history(SURABAYA)
    history = history[history["agency"].isin(offices) & (history["created_at"] < END)]
    complaints = history_complaints(history, sla_hours={})  # every office: the 24 h default
    table = office_performance(complaints, start=START, end=END, weekly=False)
    got = {r["office"]: r for r in to_records(table)}
    for office in offices:
        expected = _independent(raw, office)
        for key, value in expected.items():
            assert got[office][key] == pytest.approx(value, abs=1e-3), (office, key)
    weekly = office_performance(complaints, start=START, end=END)
    assert weekly.groupby("office")["received"].sum().to_dict() == {
        o: got[o]["received"] for o in offices
    }
