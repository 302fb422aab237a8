"""Fitting the TF-IDF (word + character n-grams) + linear SVM baseline."""

from __future__ import annotations

import logging

import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from aduan.model.labels import HEADS
from aduan.model.tfidf import LinearHead, TfidfHeads

from .config import TrainConfig

log = logging.getLogger(__name__)


def build_vectorizers(config: TrainConfig) -> dict[str, TfidfVectorizer]:
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


def fit_baseline(train: pd.DataFrame, config: TrainConfig) -> TfidfHeads:
    """Fit the vectorisers and one LinearSVC per head on the training rows."""
    texts = train["text"].tolist()
    vectorizers = build_vectorizers(config)
    features = sp.hstack([v.fit_transform(texts) for v in vectorizers.values()]).tocsr()
    log.info("tf-idf features: %d", features.shape[1])
    heads = {}
    for head in HEADS:
        svm = LinearSVC(
            C=config.svm_c, class_weight=config.class_weight or None, random_state=config.seed
        )
        heads[head] = LinearHead.from_estimator(svm.fit(features, train[head].tolist()))
    return TfidfHeads(vectorizers, heads)
