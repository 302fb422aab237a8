"""The history reader and the first-response SLA table: quantiles rounded up, small offices
left out, the pooled village/district classes, and an offices file merged without losing what
a person wrote."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from aduan.model.history import load_history, prepare_history
from aduan.model.sla import merge_offices, office_slas, sla_table


def _history(offices: dict[str, list[float]]) -> pd.DataFrame:
    created = pd.Timestamp("2022-03-01 08:00")
    rows = [
        {
            "agency": office,
            "created_at": created,
            "responded_at": created + pd.Timedelta(hours=h),
            "response_days": "1 Sampai 3 Hari",
        }
        for office, hours in offices.items()
        for h in hours
    ]
    return prepare_history(pd.DataFrame(rows))


def test_sla_table_quantile_rounded_up_and_small_offices_left_out() -> None:
    history = _history({"Dinas A": [float(h) for h in range(1, 101)], "Dinas B": [3.0] * 5})
    [only] = sla_table(history, quantile=0.85, min_rows=20)
    expected = pd.Series(range(1, 101), dtype=float).quantile(0.85)  # 85.15
    assert only.name == "Dinas A"
    assert only.sla_hours == math.ceil(expected) == 86
    assert only.rows == 100
    assert only.within_24h == pytest.approx(0.24)
    assert only.median_hours == pytest.approx(50.5)
    with pytest.raises(ValueError, match="quantile"):
        sla_table(history, quantile=1.5)


def test_sla_office_slas_pool_village_offices_into_their_class() -> None:
    history = _history(
        {
            "Kelurahan Darmo": [2.0] * 10,
            "Kelurahan Keputran": [4.0] * 10,
            "Dinas Sosial": [1.0] * 30,
        }
    )
    names = {s.name: s for s in office_slas(history, min_rows=20)}
    assert set(names) == {"Dinas Sosial", "Kelurahan"}  # neither village has 20 on its own
    assert names["Kelurahan"].rows == 20
    assert names["Kelurahan"].sla_hours == 4


def test_sla_merge_offices_keeps_what_a_person_wrote() -> None:
    history = _history({"Dinas A": [10.0] * 30, "Dinas B": [30.0] * 30})
    table = sla_table(history)
    document = {
        "version": 1,
        "offices": [{"name": "Dinas A", "webhook": "https://a.example", "sla_hours": 6}],
    }
    merged = merge_offices(document, table)
    assert merged["version"] == 1
    assert merged["offices"][0] == {
        "name": "Dinas A",
        "webhook": "https://a.example",
        "sla_hours": 10,
    }
    assert merged["offices"][1] == {"name": "Dinas B", "sla_hours": 30}
    assert document["offices"][0]["sla_hours"] == 6  # the input is not modified
    kept = merge_offices(document, table, overwrite=False)
    assert kept["offices"][0]["sla_hours"] == 6
    with pytest.raises(ValueError, match=r"offices\[0\]"):
        merge_offices({"offices": [{"webhook": "x"}]}, table)
    with pytest.raises(ValueError, match=r"offices\[1\]"):
        merge_offices({"offices": [{"name": "A"}, "B"]}, table)


def test_history_reader_types_buckets_and_clock_errors(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    pd.DataFrame(
        {
            "text": ["jalan rusak", "sampah", "lampu mati", "x"],
            "agency": ["Kelurahan  Darmo", "Dinas Lingkungan Hidup", "Dinas Perhubungan", ""],
            "kelurahan": ["Darmo", "", "Tandes", ""],
            "kecamatan": ["Wonokromo", "Tegalsari", "Tandes", ""],
            "created_at": ["2022-01-02 10:00:00", "2022-01-01 09:00:00", "2022-01-03 10:00", "x"],
            "responded_at": ["2022-01-02 12:30:00", "", "2022-01-03 09:00:00", ""],
            "response_days": ["4 Sampai 7 Hari", "", "Kapan-kapan", ""],
        }
    ).to_csv(path, index=False)
    history = load_history(path)
    assert list(history["agency"]) == [
        "Dinas Lingkungan Hidup",
        "Kelurahan Darmo",
        "Dinas Perhubungan",
    ]
    assert list(history["agency_class"]) == [
        "Dinas Lingkungan Hidup",
        "Kelurahan",
        "Dinas Perhubungan",
    ]
    assert list(history["response_days"]) == ["", "4 Sampai 7 Hari", ""]  # unknown bucket: none
    hours = history["first_response_hours"]
    assert pd.isna(hours[0]) and hours[1] == pytest.approx(2.5)
    assert pd.isna(hours[2])  # answered before it arrived: a clock error, not a fast office
