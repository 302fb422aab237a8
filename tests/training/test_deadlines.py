"""Fitting the deadline predictor: the out-of-time split, a text model that learns what the
text says about the resolution time and becomes the default only when it beats the agency
baseline, and a directory (JSON + safetensors, no pickle) that predicts the same once loaded."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aduan.model.deadlines import DEADLINES_JSON, DEADLINES_WEIGHTS, DeadlineModel
from aduan.model.history import BUCKETS, prepare_history
from aduan.training.deadlines import Months, choose_default, fit_deadlines, labelled

# Each phrase says how long its complaint takes; the agency says nothing (one agency).
_PHRASES = {
    BUCKETS[0]: ["lampu jalan mati", "sampah belum diangkut", "pohon tumbang menutup jalan"],
    BUCKETS[1]: ["jalan berlubang perlu diaspal", "trotoar rusak parah", "saluran tersumbat"],
    BUCKETS[2]: [
        "sertifikat tanah belum terbit",
        "jembatan ambruk dibangun ulang",
        "ganti rugi lahan",
    ],
}


def synthetic_history(months: int = 8, per_month: int = 45, seed: int = 3) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for m in range(months):
        for i in range(per_month):
            bucket = BUCKETS[rng.choice([0, 0, 0, 1, 2])]
            created = pd.Timestamp(2022, m + 1, rng.randint(1, 28), 9)
            rows.append(
                {
                    "text": f"{rng.choice(_PHRASES[bucket])} di rt {m}{i} mohon segera",
                    "agency": "Dinas Sumber Daya Air dan Bina Marga",
                    "kecamatan": rng.choice(["Gubeng", "Tandes"]),
                    "kelurahan": "",
                    "created_at": created,
                    "responded_at": created + pd.Timedelta(hours=rng.uniform(1, 30)),
                    "response_days": bucket,
                }
            )
    return prepare_history(pd.DataFrame(rows))


def test_deadlines_months_newest_two_tested_one_validated() -> None:
    created = pd.Series(
        pd.to_datetime(["2022-01-05", "2023-01-10", "2023-03-31 23:00"], format="mixed")
    )
    months = Months.newest(created)
    assert months.train_until == "2022-12-31"
    assert (months.valid_from, months.valid_until) == ("2023-01-01", "2023-01-31")
    assert (months.test_from, months.test_until) == ("2023-02-01", "2023-03-31")


def test_deadlines_labelled_drops_unbucketed_and_repeated_texts() -> None:
    history = synthetic_history(months=2, per_month=5)
    history.loc[0, "response_days"] = ""
    history.loc[2, "text"] = history.loc[1, "text"]
    rows = labelled(history)
    assert len(rows) == len(history) - 2
    assert set(rows["y"]) <= {0, 1, 2}


def test_deadlines_text_model_beats_agency_baseline_and_round_trips(tmp_path: Path) -> None:
    fitted = fit_deadlines(synthetic_history(), refit=True)
    metrics = fitted.metrics
    assert metrics["months"]["test_from"] == "2022-07-01"
    model, baseline = metrics["test"]["model"], metrics["test"]["baseline"]
    # One agency: the baseline can only ever say "1-3 days"; the text tells the buckets apart.
    assert baseline["macro_f1"] < 0.35
    assert model["macro_f1"] > 0.9 and model["log_loss"] < baseline["log_loss"]
    assert metrics["default"] == "model" and fitted.model.default == "model"
    assert sum(b["count"] for b in model["reliability"]) == model["rows"]

    fitted.model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DEADLINES_JSON, DEADLINES_WEIGHTS])
    loaded = DeadlineModel.load(tmp_path)
    texts = ["jembatan ambruk dibangun ulang di rt 9", "lampu jalan mati mohon segera"]
    agencies = ["Dinas Sumber Daya Air dan Bina Marga"] * 2
    units = ["Gubeng", None]
    before = fitted.model.predict_proba(texts, agencies, units)
    after = loaded.predict_proba(texts, agencies, units)
    np.testing.assert_allclose(after, before, rtol=1e-5)
    assert loaded.predict(texts, agencies, units) == [BUCKETS[2], BUCKETS[0]]


def test_deadlines_default_is_the_baseline_unless_beaten_on_both_counts() -> None:
    baseline = {"macro_f1": 0.45, "log_loss": 0.82}
    assert choose_default({"macro_f1": 0.46, "log_loss": 0.81}, baseline) == "model"
    assert choose_default({"macro_f1": 0.46, "log_loss": 0.84}, baseline) == "baseline"
    assert choose_default({"macro_f1": 0.44, "log_loss": 0.70}, baseline) == "baseline"


def test_deadlines_empty_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty split"):
        fit_deadlines(synthetic_history(months=2))
