import numpy as np

from aduan.model.calibration import softmax
from aduan.training.metrics import (
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    head_metrics,
)


def test_metrics_threshold_routes_the_most_rows_at_target_accuracy():
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    # top-3 are 100% right, top-5 are 80%: the best cut at >= 0.8 accuracy is 0.7
    assert choose_threshold(confidence, correct, 0.8) == 0.7
    assert choose_threshold(confidence, correct, 0.95) == 0.9


def test_metrics_threshold_routes_nothing_when_target_unreachable():
    assert choose_threshold(np.array([0.9, 0.8]), np.array([False, False]), 0.95) > 1.0


def test_metrics_threshold_keeps_ties_together():
    confidence = np.array([0.9, 0.9, 0.5])
    correct = np.array([True, False, True])
    # cutting between the two 0.9 rows is impossible: 0.5 accuracy at 0.9
    assert choose_threshold(confidence, correct, 0.95) > 1.0


def test_metrics_temperature_softens_overconfident_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3))
    logits[np.arange(500), y] += 1.0
    overconfident = logits * 10
    t = fit_temperature(overconfident, y)
    assert 5 < t < 20
    before = expected_calibration_error(
        softmax(overconfident).max(1), softmax(overconfident).argmax(1) == y
    )
    after_p = softmax(overconfident, t)
    after = expected_calibration_error(after_p.max(1), after_p.argmax(1) == y)
    assert after < before


def test_metrics_head_counts_unknown_labels_as_errors():
    labels = ("a", "b", "c")
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    m = head_metrics(["a", "b", "a", "zzz"], proba, labels, threshold=0.7)
    assert m["accuracy"] == 0.5
    assert m["top3_accuracy"] == 0.75
    assert m["unknown_label_rows"] == 1 and m["unknown_labels"] == ["zzz"]
    assert m["auto_route_coverage"] == 0.5 and m["auto_route_accuracy"] == 1.0
    assert m["per_class"]["zzz"]["recall"] == 0.0
