"""The auto-route promise on later months: the lower-confidence-bound threshold method
(`calibration.threshold_method: lcb`) against today's point method."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from aduan.model.labels import LabelSet
from aduan.training.calibration import calibrate
from aduan.training.config import CalibrationConfig, load_config
from aduan.training.data import Splits
from aduan.training.metrics import accuracy_lower_bound, choose_threshold
from aduan.training.train import train
from tests.conftest import SPLIT

TARGET = 0.95


def drifting_windows(rows: int, drift: float):
    """A validation window where a complaint of confidence c is right with probability c,
    its hits laid out so that every cut's accuracy is exactly its expectation (no luck either
    way), and the later months' expected routed accuracy at a threshold, `drift` lower."""
    confidence = np.linspace(1.0, 0.3, rows)
    expected_hits = np.floor(np.cumsum(confidence))
    correct = np.diff(expected_hits, prepend=0.0) > 0

    def later_accuracy(threshold: float) -> float:
        routed = confidence[confidence >= threshold]
        return float(np.mean(routed) - drift)

    return confidence, correct, later_accuracy


@pytest.mark.parametrize(("rows", "drift"), [(5000, 0.01), (20000, 0.005), (5000, 0.005)])
def test_promise_lcb_keeps_95_on_a_drifted_later_window_where_point_fails(rows, drift):
    confidence, correct, later_accuracy = drifting_windows(rows, drift)
    point = choose_threshold(confidence, correct, TARGET)
    lcb = choose_threshold(confidence, correct, TARGET, method="lcb", level=0.95)
    assert point < 1.0 and lcb < 1.0
    assert later_accuracy(point) < TARGET  # today's threshold breaks the promise later
    assert later_accuracy(lcb) >= TARGET  # the bound's threshold keeps it
    # ... at the cost of routing somewhat fewer complaints, not of routing none.
    assert 0.5 * (confidence >= point).mean() < (confidence >= lcb).mean()


def test_promise_lcb_threshold_is_never_below_the_point_threshold():
    rng = np.random.default_rng(0)
    for trial in range(200):
        rows = int(rng.integers(1, 400))
        # Coarse confidences make ties, which both methods must route together.
        confidence = np.round(rng.uniform(0.2, 1.0, rows), int(rng.integers(1, 4)))
        correct = rng.random(rows) < confidence + rng.uniform(-0.1, 0.1)
        target = float(rng.choice([0.8, 0.9, 0.95]))
        point = choose_threshold(confidence, correct, target)
        for level in (0.8, 0.95, 0.99):
            lcb = choose_threshold(confidence, correct, target, method="lcb", level=level)
            assert lcb >= point, (trial, level)
        assert choose_threshold(confidence, correct, target, margin=0.02) >= point


def test_promise_lower_bound_matches_the_closed_form_when_every_row_is_right():
    # Clopper-Pearson's one-sided bound for n of n right is alpha ** (1 / n).
    rows = np.array([1, 10, 59, 500])
    np.testing.assert_allclose(accuracy_lower_bound(rows, rows, 0.95), 0.05 ** (1 / rows))
    assert accuracy_lower_bound(np.array([0]), np.array([10]), 0.95)[0] == 0.0
    # More rows at the same accuracy: a tighter (higher) bound, always below the estimate.
    bounds = accuracy_lower_bound(np.array([95, 950, 9500]), np.array([100, 1000, 10000]), 0.95)
    assert np.all(np.diff(bounds) > 0) and np.all(bounds < 0.95)


def test_promise_too_few_rows_route_nothing_with_lcb():
    # 58 right answers cannot show 95% at 95% confidence (0.05 ** (1/58) < 0.95); 59 can.
    few = np.linspace(0.99, 0.9, 58)
    assert choose_threshold(few, np.ones(58, bool), TARGET) == pytest.approx(0.9)
    assert choose_threshold(few, np.ones(58, bool), TARGET, method="lcb") > 1.0
    enough = np.linspace(0.99, 0.9, 59)
    assert choose_threshold(enough, np.ones(59, bool), TARGET, method="lcb") == pytest.approx(0.9)
    empty = np.array([], dtype=np.float64)
    assert choose_threshold(empty, empty.astype(bool), TARGET, method="lcb") > 1.0
    assert choose_threshold(empty, empty.astype(bool), TARGET) > 1.0


def test_promise_margin_raises_the_bar_and_an_unreachable_one_routes_nothing():
    confidence = np.linspace(1.0, 0.5, 100)
    correct = np.ones(100, bool)
    correct[[5, 30, 60]] = False  # 97/100 right overall; the top 5 all right
    assert choose_threshold(confidence, correct, 0.9) == pytest.approx(0.5)
    assert choose_threshold(confidence, correct, 0.9, margin=0.06) == pytest.approx(0.5)
    # 98% is only reached by the top 5 (the 6th is wrong and nothing later recovers it).
    assert choose_threshold(confidence, correct, 0.9, margin=0.08) == pytest.approx(confidence[4])
    wrong_first = choose_threshold(np.array([0.9, 0.8]), np.array([False, True]), 0.5, margin=0.1)
    assert wrong_first > 1.0


def test_promise_unknown_method_and_bad_settings_are_refused_when_read():
    with pytest.raises(ValueError, match="threshold method"):
        choose_threshold(np.array([0.9]), np.array([True]), TARGET, method="mean")
    with pytest.raises(ValueError, match=r"calibration\.threshold_method"):
        load_config("baseline", {"calibration.threshold_method": "mean"})
    with pytest.raises(ValueError, match=r"calibration\.confidence"):
        load_config("baseline", {"calibration.confidence": "1.5"})
    config = load_config(
        "baseline", {"calibration.threshold_method": "lcb", "calibration.margin": "0.01"}
    )
    assert config.calibration == CalibrationConfig("lcb", 0.95, 0.01)


def _splits(truth: list[str]) -> Splits:
    valid = pd.DataFrame({"category": truth, "agency": truth})
    label_set = LabelSet.from_values(pd.Series(["a", "b"]))
    return Splits(valid, valid, {"category": label_set, "agency": label_set}, {})


def test_promise_calibrate_says_when_nothing_can_be_routed(caplog):
    # 30 validation rows: 29 confident and right, one unsure and wrong. The point method
    # routes all 30 (96.7% right); the bound cannot vouch for 95% on so few, so nothing is
    # routed and a WARNING says why.
    margins = np.append(np.linspace(4.0, 2.0, 29), 0.5)
    one_head = np.stack([margins, np.zeros(30)], axis=1)
    logits = {head: one_head for head in ("category", "agency")}
    splits = _splits(["a"] * 29 + ["b"])
    point = calibrate(logits, splits, TARGET)
    assert point.thresholds["agency"] < 1.0
    assert point.metrics["agency"]["auto_route_coverage"] == 1.0
    with caplog.at_level(logging.WARNING, logger="aduan.training.calibration"):
        bound = calibrate(logits, splits, TARGET, CalibrationConfig("lcb"))
    assert bound.thresholds["agency"] > 1.0
    assert bound.metrics["agency"]["auto_route_coverage"] == 0.0
    assert "nothing is routed automatically" in caplog.text and "30 validation rows" in caplog.text


def test_promise_training_records_the_method_and_its_threshold_is_not_lower(
    tmp_path, complaints_csv
):
    split = dict(item.split("=", 1) for item in SPLIT[1::2])
    thresholds = {}
    for method in ("point", "lcb"):
        config = load_config(
            "baseline",
            {**split, "tfidf.min_df": "1", "calibration.threshold_method": method},
            data=[str(complaints_csv)],
        )
        out = tmp_path / method
        train(config, out)
        written = json.loads((out / "config.json").read_text(encoding="utf-8"))
        assert written["calibration"]["threshold_method"] == method
        thresholds[method] = written["thresholds"]
    assert all(thresholds["lcb"][h] >= thresholds["point"][h] for h in thresholds["point"])
    card = (tmp_path / "lcb" / "README.md").read_text(encoding="utf-8")
    assert "lower confidence bound" in card
