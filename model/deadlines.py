"""The resolution-time prediction: which bucket (1-3 days, 4-7 days, more than 7) a complaint
will close in, from its text, agency and unit, and the `expected_datetime` that follows.

A deadline directory holds `deadlines.json` (buckets, which predictor is the default, the
agency baseline's bucket frequencies, the TF-IDF vocabulary and the temperature, the measured
figures) and, when a text model was trained, `deadlines.safetensors` (idf and the logistic
regression's weights). No pickle. `aduan.training.deadlines` writes it; this module only
loads and predicts.

Two predictors share the interface: `baseline` (the agency's bucket frequencies in the
history, smoothed toward the overall ones) and `model` (TF-IDF of the text plus one-hot
agency, kecamatan and kelurahan, multinomial logistic regression, temperature-scaled). The
directory's `default` says which one `predict_proba` uses: the baseline unless the model beat
it out of time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer

from .calibration import softmax
from .history import BUCKET_HOURS, BUCKETS
from .taxonomy import agency_class

DEADLINES_JSON = "deadlines.json"
DEADLINES_WEIGHTS = "deadlines.safetensors"
FORMAT_VERSION = 1
BASELINE, MODEL = "baseline", "model"
# How many rows of prior a small agency's frequencies are pulled toward the overall ones.
SMOOTHING_ROWS = 5.0
# The word vectoriser's settings, stored with the vocabulary so load rebuilds it exactly.
VECTOR_SETTINGS: dict[str, Any] = {
    "analyzer": "word",
    "ngram_range": [1, 2],
    "lowercase": True,
    "sublinear_tf": True,
    "min_df": 3,
    "max_features": 50000,
}


class DeadlineDirError(ValueError):
    """A deadline directory that cannot be loaded; the message names the file."""


@dataclass
class AgencyBaseline:
    """Per agency class, the smoothed bucket frequencies; unknown agencies get the prior."""

    prior: np.ndarray  # (buckets,)
    agencies: dict[str, np.ndarray] = field(default_factory=dict)

    def predict_proba(self, agencies: Sequence[str]) -> np.ndarray:
        rows = [self.agencies.get(agency_class(a), self.prior) for a in agencies]
        return np.vstack(rows) if rows else np.zeros((0, len(self.prior)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prior": [round(float(p), 6) for p in self.prior],
            "agencies": {a: [round(float(p), 6) for p in v] for a, v in self.agencies.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AgencyBaseline:
        return cls(
            np.asarray(raw["prior"], dtype=np.float64),
            {a: np.asarray(v, dtype=np.float64) for a, v in raw["agencies"].items()},
        )


def meta_tokens(agency: str, kecamatan: str | None, kelurahan: str | None) -> list[str]:
    """The one-hot features of a complaint's routing: its agency class and its unit."""
    tokens = [f"agency={agency_class(agency)}"]
    if kecamatan:
        tokens.append(f"kecamatan={' '.join(kecamatan.split()).casefold()}")
    if kelurahan:
        tokens.append(f"kelurahan={' '.join(kelurahan.split()).casefold()}")
    return tokens


@dataclass
class TextModel:
    """TF-IDF of the text beside one-hot routing features, and a linear softmax over them."""

    vectorizer: TfidfVectorizer
    meta_vocabulary: list[str]
    coef: np.ndarray  # (buckets, features)
    intercept: np.ndarray  # (buckets,)
    temperature: float = 1.0

    def features(
        self,
        texts: Sequence[str],
        agencies: Sequence[str],
        kecamatans: Sequence[str | None],
        kelurahans: Sequence[str | None],
    ) -> sp.csr_matrix:
        words = self.vectorizer.transform(list(texts))
        index = {t: i for i, t in enumerate(self.meta_vocabulary)}
        rows, cols = [], []
        for i, (a, kc, kl) in enumerate(zip(agencies, kecamatans, kelurahans, strict=True)):
            for token in meta_tokens(a, kc, kl):
                if token in index:
                    rows.append(i)
                    cols.append(index[token])
        meta = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(self.meta_vocabulary))
        )
        return sp.hstack([words, meta]).tocsr()

    def logits(self, features: sp.csr_matrix) -> np.ndarray:
        return np.asarray(features @ self.coef.T, dtype=np.float64) + self.intercept

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        return softmax(self.logits(features), self.temperature)


class DeadlineModel:
    """A loaded deadline directory: `predict_proba` over `buckets` with the default predictor
    (or the one named), `predict` the most likely bucket."""

    def __init__(
        self,
        baseline: AgencyBaseline,
        text_model: TextModel | None = None,
        default: str = BASELINE,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if default == MODEL and text_model is None:
            raise ValueError("the default predictor is the text model, but there is none")
        self.baseline = baseline
        self.text_model = text_model
        self.default = default
        self.metrics = metrics or {}
        self.buckets: tuple[str, ...] = BUCKETS

    def predict_proba(
        self,
        texts: Sequence[str],
        agencies: Sequence[str],
        kecamatans: Sequence[str | None] | None = None,
        kelurahans: Sequence[str | None] | None = None,
        predictor: str | None = None,
    ) -> np.ndarray:
        """(n, 3) bucket probabilities, columns in `buckets` order."""
        predictor = predictor or self.default
        if predictor == BASELINE:
            return self.baseline.predict_proba(agencies)
        if self.text_model is None:
            raise ValueError("this deadline directory has no text model")
        n = len(texts)
        features = self.text_model.features(
            texts, agencies, kecamatans or [None] * n, kelurahans or [None] * n
        )
        return self.text_model.predict_proba(features)

    def predict(self, *args: Any, **kwargs: Any) -> list[str]:
        probs = self.predict_proba(*args, **kwargs)
        return [self.buckets[i] for i in probs.argmax(axis=1)]

    def expected_at(
        self,
        received_at: datetime,
        text: str,
        agency: str,
        kecamatan: str | None = None,
        kelurahan: str | None = None,
    ) -> datetime:
        """One routed complaint's Open311 `expected_datetime`, from the default predictor: what
        the service's `expected_resolution` calls."""
        [probs] = self.predict_proba([text], [agency], [kecamatan], [kelurahan])
        return expected_datetime(received_at, probs)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        spec: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "buckets": list(self.buckets),
            "bucket_hours": BUCKET_HOURS,
            "default": self.default,
            "baseline": self.baseline.to_dict(),
            "metrics": self.metrics,
        }
        if self.text_model is not None:
            tm = self.text_model
            vocabulary = sorted(
                tm.vectorizer.vocabulary_, key=tm.vectorizer.vocabulary_.__getitem__
            )
            spec["model"] = {
                "vectorizer": {"settings": VECTOR_SETTINGS, "vocabulary": vocabulary},
                "meta_vocabulary": tm.meta_vocabulary,
                "temperature": tm.temperature,
            }
            save_file(
                {
                    "idf": np.ascontiguousarray(tm.vectorizer.idf_, dtype=np.float64),
                    "coef": np.ascontiguousarray(tm.coef, dtype=np.float32),
                    "intercept": np.ascontiguousarray(tm.intercept, dtype=np.float32),
                },
                str(directory / DEADLINES_WEIGHTS),
            )
        (directory / DEADLINES_JSON).write_text(
            json.dumps(spec, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: Path | str) -> DeadlineModel:
        directory = Path(directory)
        path = directory / DEADLINES_JSON
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DeadlineDirError(f"{path}: missing or unreadable ({exc})") from exc
        if (
            spec.get("format_version") != FORMAT_VERSION
            or tuple(spec.get("buckets", ())) != BUCKETS
        ):
            raise DeadlineDirError(f"{path}: not a deadline directory of format {FORMAT_VERSION}")
        text_model = _load_text_model(directory, spec["model"]) if "model" in spec else None
        try:
            return cls(
                AgencyBaseline.from_dict(spec["baseline"]),
                text_model,
                spec.get("default", BASELINE),
                spec.get("metrics"),
            )
        except (KeyError, ValueError) as exc:
            raise DeadlineDirError(f"{path}: {exc}") from exc


def _load_text_model(directory: Path, raw: dict[str, Any]) -> TextModel:
    weights = directory / DEADLINES_WEIGHTS
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # missing, truncated or not safetensors
        raise DeadlineDirError(f"{weights}: missing or unreadable ({exc})") from exc
    settings = dict(raw["vectorizer"]["settings"])
    vocabulary = raw["vectorizer"]["vocabulary"]
    settings["ngram_range"] = tuple(settings["ngram_range"])
    settings.pop("min_df", None)
    settings.pop("max_features", None)
    vectorizer = TfidfVectorizer(vocabulary=vocabulary, **settings)
    vectorizer.vocabulary_ = {t: i for i, t in enumerate(vocabulary)}
    vectorizer.fixed_vocabulary_ = True
    vectorizer.idf_ = tensors["idf"]
    coef = tensors["coef"]
    if coef.shape[1] != len(vocabulary) + len(raw["meta_vocabulary"]):
        raise DeadlineDirError(f"{weights}: weights do not match the stored vocabularies")
    return TextModel(
        vectorizer,
        list(raw["meta_vocabulary"]),
        coef,
        tensors["intercept"],
        float(raw.get("temperature", 1.0)),
    )


def expected_hours(bucket_probs: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """Hours from arrival to the expected resolution: each bucket's `BUCKET_HOURS` weighted by
    its probability. One row of probabilities gives a float, a matrix one value per row."""
    probs = np.asarray(bucket_probs, dtype=np.float64)
    hours = np.array([BUCKET_HOURS[b] for b in BUCKETS])
    if probs.shape[-1] != len(hours):
        raise ValueError(f"expected {len(hours)} bucket probabilities, got {probs.shape[-1]}")
    out = probs @ hours / probs.sum(axis=-1)
    return float(out) if out.ndim == 0 else out


def expected_datetime(received_at: datetime, bucket_probs: Sequence[float]) -> datetime:
    """Open311's `expected_datetime`: the arrival plus `expected_hours`, to the minute."""
    offset = timedelta(hours=float(expected_hours(bucket_probs)))
    return (received_at + offset).replace(second=0, microsecond=0)


def median_hours(bucket_probs: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """The hours of the median bucket (the first whose cumulative probability reaches 0.5):
    the estimate with the smaller absolute error on the history (docs/followup-history.md),
    where `expected_hours` is the mean."""
    probs = np.asarray(bucket_probs, dtype=np.float64)
    hours = np.array([BUCKET_HOURS[b] for b in BUCKETS])
    cumulative = probs.cumsum(axis=-1) / probs.sum(axis=-1, keepdims=True)
    out = hours[(cumulative >= 0.5).argmax(axis=-1)]
    return float(out) if np.ndim(out) == 0 else out
