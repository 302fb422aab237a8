"""Fitting the resolution-bucket predictor and measuring it out of time against the baseline.

Months, oldest to newest: fit on the training months, choose the regularisation and the
temperature on the validation month(s), measure on the test months, which no choice has seen
(as `bench/outoftime.py` does for the classifier). The shipped default is the text model only
when it beats the agency baseline there on both macro-F1 and log-loss (the probabilities drive
`expected_datetime`); otherwise the baseline. With `refit`, both are fitted again on every
labelled row with the same choices before they are written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss

from aduan.model.deadlines import (
    BASELINE,
    MODEL,
    SMOOTHING_ROWS,
    VECTOR_SETTINGS,
    AgencyBaseline,
    DeadlineModel,
    TextModel,
    expected_hours,
    meta_tokens,
)
from aduan.model.history import BUCKET_HOURS, BUCKETS, load_history

from .metrics import expected_calibration_error, fit_temperature, reliability_bins

log = logging.getLogger(__name__)
C_GRID = (0.1, 0.3, 1.0)


@dataclass(frozen=True)
class Months:
    """The out-of-time split, as inclusive ISO dates."""

    train_until: str
    valid_from: str
    valid_until: str
    test_from: str
    test_until: str

    @classmethod
    def newest(cls, created_at: pd.Series, test_months: int = 2) -> Months:
        """Test on the newest `test_months` calendar months, validate on the month before,
        train on everything older."""
        last = created_at.max().to_period("M")
        test_first = last - (test_months - 1)
        valid = test_first - 1
        return cls(
            train_until=str((valid - 1).end_time.date()),
            valid_from=str(valid.start_time.date()),
            valid_until=str(valid.end_time.date()),
            test_from=str(test_first.start_time.date()),
            test_until=str(last.end_time.date()),
        )

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        day = frame["created_at"].dt.normalize()

        def between(lo: str | None, hi: str) -> pd.DataFrame:
            mask = day <= pd.Timestamp(hi)
            if lo:
                mask &= day >= pd.Timestamp(lo)
            return frame[mask].reset_index(drop=True)

        return (
            between(None, self.train_until),
            between(self.valid_from, self.valid_until),
            between(self.test_from, self.test_until),
        )


def labelled(history: pd.DataFrame) -> pd.DataFrame:
    """Rows with a resolution bucket and text; a text seen before keeps its first row (a
    repeated complaint in a later month would otherwise be measured on its own label)."""
    rows = history[(history["response_days"] != "") & (history["text"] != "")]
    rows = rows.drop_duplicates("text", keep="first")
    return rows.assign(y=rows["response_days"].map(BUCKETS.index)).reset_index(drop=True)


def fit_baseline(train: pd.DataFrame) -> AgencyBaseline:
    counts = np.bincount(train["y"], minlength=len(BUCKETS)).astype(np.float64)
    prior = (counts + 1) / (counts.sum() + len(BUCKETS))
    agencies = {}
    for agency, ys in train.groupby("agency_class")["y"]:
        c = np.bincount(ys, minlength=len(BUCKETS)).astype(np.float64)
        agencies[str(agency)] = (c + SMOOTHING_ROWS * prior) / (c.sum() + SMOOTHING_ROWS)
    return AgencyBaseline(prior, agencies)


def _meta(frame: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    return (
        frame["agency_class"].tolist(),
        frame["kecamatan"].tolist(),
        frame["kelurahan"].tolist(),
    )


def fit_text_model(
    train: pd.DataFrame, c: float, temperature: float = 1.0, balanced: bool = False
) -> TextModel:
    settings = {**VECTOR_SETTINGS, "ngram_range": tuple(VECTOR_SETTINGS["ngram_range"])}
    vectorizer = TfidfVectorizer(**settings).fit(train["text"].tolist())
    meta = sorted({t for row in zip(*_meta(train), strict=True) for t in meta_tokens(*row)})
    empty = TextModel(vectorizer, meta, np.zeros((0, 0)), np.zeros(0))
    features = empty.features(train["text"].tolist(), *_meta(train))
    estimator = LogisticRegression(
        C=c, max_iter=2000, class_weight="balanced" if balanced else None
    )
    estimator.fit(features, train["y"].to_numpy())
    if list(estimator.classes_) != list(range(len(BUCKETS))):
        raise ValueError("the training months do not hold every resolution bucket")
    return TextModel(vectorizer, meta, estimator.coef_, estimator.intercept_, temperature)


def text_probs(model: TextModel, frame: pd.DataFrame, raw: bool = False) -> np.ndarray:
    features = model.features(frame["text"].tolist(), *_meta(frame))
    if raw:
        return model.logits(features)
    return model.predict_proba(features)


def figures(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, log-loss, top-label ECE with its reliability table, per-bucket
    calibration (mean predicted probability against observed share), and the mean absolute
    error of `expected_hours` against the true bucket's hours."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    correct = (predicted == y).astype(np.float64)
    truth_hours = np.array([BUCKET_HOURS[BUCKETS[i]] for i in y])
    per_bucket = {
        bucket: {
            "mean_probability": round(float(probs[:, i].mean()), 4),
            "observed_share": round(float((y == i).mean()), 4),
            "ece": round(expected_calibration_error(probs[:, i], (y == i).astype(float)), 4),
        }
        for i, bucket in enumerate(BUCKETS)
    }
    return {
        "rows": len(y),
        "accuracy": round(float(accuracy_score(y, predicted)), 4),
        "macro_f1": round(
            float(f1_score(y, predicted, average="macro", labels=range(len(BUCKETS)))), 4
        ),
        "log_loss": round(float(log_loss(y, probs, labels=range(len(BUCKETS)))), 4),
        "ece": round(expected_calibration_error(confidence, correct), 4),
        "reliability": reliability_bins(confidence, correct),
        "buckets": per_bucket,
        "expected_hours_mae": round(float(np.abs(expected_hours(probs) - truth_hours).mean()), 1),
    }


def median_bucket_probs(baseline: AgencyBaseline, agencies: list[str]) -> np.ndarray:
    """The agency's median bucket as a (nearly) one-hot row: the issue's 'obvious baseline';
    a point rule has no probabilities worth the name, so its log-loss only shows that."""
    probs = baseline.predict_proba(agencies)
    median = (probs.cumsum(axis=1) >= 0.5).argmax(axis=1)
    rows = np.eye(len(BUCKETS))[median] + 1e-6
    return rows / rows.sum(axis=1, keepdims=True)


def choose_default(model: dict[str, Any], baseline: dict[str, Any]) -> str:
    """The text model only when it is better on the test months on both counts: the buckets
    (macro-F1) and the probabilities `expected_datetime` is made of (log-loss)."""
    better = model["macro_f1"] > baseline["macro_f1"] and model["log_loss"] < baseline["log_loss"]
    return MODEL if better else BASELINE


@dataclass
class Fitted:
    model: DeadlineModel
    metrics: dict[str, Any]


def fit_deadlines(
    history: pd.DataFrame, months: Months | None = None, refit: bool = True
) -> Fitted:
    """Choose, measure and fit; `metrics` holds the split, the choices and the test figures
    of the model, the agency baseline and the agency-median rule."""
    rows = labelled(history)
    months = months or Months.newest(rows["created_at"])
    train, valid, test = months.split(rows)
    if min(len(train), len(valid), len(test)) == 0:
        raise ValueError(f"empty split {months}: {len(train)}/{len(valid)}/{len(test)} rows")
    log.info("deadline rows: %d train, %d valid, %d test", len(train), len(valid), len(test))
    baseline = fit_baseline(train)
    best: tuple[float, float, TextModel] | None = None
    for c in C_GRID:
        candidate = fit_text_model(train, c)
        loss = log_loss(valid["y"], text_probs(candidate, valid), labels=range(len(BUCKETS)))
        log.info("C=%s: validation log-loss %.4f", c, loss)
        if best is None or loss < best[0]:
            best = (loss, c, candidate)
    assert best is not None
    _, c, text_model = best
    text_model.temperature = fit_temperature(text_probs(text_model, valid, raw=True), valid["y"])
    y = test["y"].to_numpy()
    agencies = test["agency_class"].tolist()
    results = {
        MODEL: figures(text_probs(text_model, test), y),
        BASELINE: figures(baseline.predict_proba(agencies), y),
        "agency_median": figures(median_bucket_probs(baseline, agencies), y),
    }
    m, b = results[MODEL], results[BASELINE]
    default = choose_default(m, b)
    wins = default == MODEL
    log.info(
        "test: model macro-F1 %.3f log-loss %.3f, baseline %.3f / %.3f -> default %s",
        m["macro_f1"],
        m["log_loss"],
        b["macro_f1"],
        b["log_loss"],
        default,
    )
    metrics: dict[str, Any] = {
        "months": months.__dict__,
        "rows": {"train": len(train), "valid": len(valid), "test": len(test)},
        "chosen": {"C": c, "temperature": round(text_model.temperature, 4)},
        "default": default,
        "model_beats_baseline": wins,
        "test": results,
        "refit": refit,
    }
    if refit:
        everything = pd.concat([train, valid, test], ignore_index=True)
        baseline = fit_baseline(everything)
        text_model = fit_text_model(everything, c, text_model.temperature)
    return Fitted(DeadlineModel(baseline, text_model, default, metrics), metrics)


def train_deadlines(data: Path, output: Path, refit: bool = True) -> dict[str, Any]:
    """`aduan followup deadlines train`: read `data`, fit, write the directory `output`."""
    fitted = fit_deadlines(load_history(data), refit=refit)
    fitted.model.save(output)
    return fitted.metrics
