"""The deadline predictor's serving side: expected hours from bucket probabilities, the agency
baseline's fallbacks, and a directory that refuses to load when it is not one."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from aduan.model.deadlines import (
    DEADLINES_JSON,
    AgencyBaseline,
    DeadlineDirError,
    DeadlineModel,
    expected_datetime,
    expected_hours,
    median_hours,
)
from aduan.model.history import BUCKET_HOURS, BUCKETS


def test_deadlines_expected_hours_weights_bucket_hours() -> None:
    hours = [BUCKET_HOURS[b] for b in BUCKETS]
    assert expected_hours([0, 1, 0]) == hours[1]
    assert expected_hours([0.5, 0.25, 0.25]) == pytest.approx(
        0.5 * hours[0] + 0.25 * hours[1] + 0.25 * hours[2]
    )
    matrix = expected_hours(np.array([[1, 0, 0], [0, 0, 1]]))
    assert list(matrix) == [hours[0], hours[2]]
    with pytest.raises(ValueError, match="3 bucket"):
        expected_hours([0.5, 0.5])


def test_deadlines_median_hours_is_the_median_bucket() -> None:
    hours = [BUCKET_HOURS[b] for b in BUCKETS]
    assert median_hours([0.6, 0.1, 0.3]) == hours[0]
    assert median_hours([0.3, 0.1, 0.6]) == hours[2]
    assert list(median_hours(np.array([[0.4, 0.2, 0.4], [0.2, 0.2, 0.6]]))) == [hours[1], hours[2]]


def test_deadlines_expected_datetime_offsets_arrival() -> None:
    arrived = datetime(2023, 2, 1, 9, 15, 42)
    assert expected_datetime(arrived, [1, 0, 0]) == datetime(2023, 2, 3, 9, 15)


def test_deadlines_baseline_falls_back_to_prior_and_class() -> None:
    baseline = AgencyBaseline(np.array([0.6, 0.2, 0.2]), {"Kelurahan": np.array([0.2, 0.3, 0.5])})
    probs = baseline.predict_proba(["Kelurahan Darmo", "Dinas Baru"])
    assert probs[0].tolist() == [0.2, 0.3, 0.5]  # a village office: its class's figures
    assert probs[1].tolist() == [0.6, 0.2, 0.2]  # an agency never seen: the prior
    model = DeadlineModel(baseline)
    assert model.predict(["", ""], ["Kelurahan Darmo", "Dinas Baru"]) == [BUCKETS[2], BUCKETS[0]]
    with pytest.raises(ValueError, match="no text model"):
        model.predict_proba(["x"], ["Kelurahan"], predictor="model")


def test_deadlines_baseline_only_directory_round_trips(tmp_path: Path) -> None:
    baseline = AgencyBaseline(
        np.array([0.5, 0.3, 0.2]), {"Dinas Sosial": np.array([0.1, 0.1, 0.8])}
    )
    DeadlineModel(baseline, metrics={"note": 1}).save(tmp_path)
    loaded = DeadlineModel.load(tmp_path)
    assert loaded.default == "baseline" and loaded.text_model is None
    assert loaded.predict_proba(["x"], ["Dinas Sosial"]).tolist() == [[0.1, 0.1, 0.8]]
    assert loaded.metrics == {"note": 1}
    arrived = datetime(2023, 2, 1, 9, 0)
    expected = expected_datetime(arrived, [0.1, 0.1, 0.8])
    assert loaded.expected_at(arrived, "x", "Dinas Sosial", "Gubeng") == expected


def test_deadlines_load_refuses_what_is_not_a_deadline_directory(tmp_path: Path) -> None:
    with pytest.raises(DeadlineDirError, match=DEADLINES_JSON):
        DeadlineModel.load(tmp_path)
    (tmp_path / DEADLINES_JSON).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(DeadlineDirError, match="format"):
        DeadlineModel.load(tmp_path)
    spec = {"format_version": 1, "buckets": list(BUCKETS), "baseline": {}, "model": {}}
    (tmp_path / DEADLINES_JSON).write_text(json.dumps(spec))
    with pytest.raises(DeadlineDirError, match="safetensors"):
        DeadlineModel.load(tmp_path)
