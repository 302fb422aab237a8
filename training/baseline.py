"""The TF-IDF (word + character n-grams) + linear SVM baseline and its trainer."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from aduan.model.labels import HEADS
from aduan.model.tfidf import LinearHead, TfidfBackend, TfidfHeads

from .config import TfidfConfig, TrainConfig
from .data import Splits
from .steps import Selection

log = logging.getLogger(__name__)


def build_vectorizers(config: TfidfConfig) -> dict[str, TfidfVectorizer]:
    return {
        "word": TfidfVectorizer(
            lowercase=True,
            ngram_range=(1, config.word_ngram_max),
            min_df=config.min_df,
            sublinear_tf=True,
            max_features=config.max_features,
        ),
        "char": TfidfVectorizer(
            lowercase=True,
            analyzer="char_wb",
            ngram_range=(config.char_ngram_min, config.char_ngram_max),
            min_df=config.min_df,
            sublinear_tf=True,
            max_features=config.max_features,
        ),
    }


def fit_baseline(train: pd.DataFrame, config: TfidfConfig, seed: int) -> TfidfHeads:
    """Fit the vectorisers and one LinearSVC per head on the training rows."""
    texts = train["text"].tolist()
    vectorizers = build_vectorizers(config)
    features = sp.hstack([v.fit_transform(texts) for v in vectorizers.values()]).tocsr()
    log.info("tf-idf features: %d", features.shape[1])
    heads = {}
    for head in HEADS:
        svm = LinearSVC(C=config.svm_c, class_weight=config.class_weight or None, random_state=seed)
        heads[head] = LinearHead.from_estimator(svm.fit(features, train[head].tolist()))
    return TfidfHeads(vectorizers, heads)


class TfidfTrainer:
    """The `tfidf` kind's two steps; it chooses nothing on the validation months (its
    temperatures and thresholds are the run's calibration)."""

    def __init__(self, config: TrainConfig, checkpoint_dir: Path) -> None:
        self.config = config

    def _fit(self, splits: Splits) -> TfidfBackend:
        heads = fit_baseline(splits.train, self.config.tfidf, self.config.seed)
        return TfidfBackend(heads, splits.labels)

    def select(self, splits: Splits) -> Selection:
        return Selection(self._fit(splits))

    def refit(self, selection: Selection, every: Splits) -> TfidfBackend:
        return self._fit(every)
