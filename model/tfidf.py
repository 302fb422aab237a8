"""The TF-IDF + linear model kind (`aduan-tfidf`): saving, loading and running it.

Stored without pickle: the vectoriser settings and vocabularies as JSON (`tfidf.json`), the idf
vectors and linear weights as safetensors (`tfidf.safetensors`). skops was measured first: it
took 378 s and 126 MB to save the two vectorisers, because it writes every vocabulary entry as
a separate object; this format takes under a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer

from .artifacts import ModelDirError, head_labels
from .calibration import as_logits
from .labels import HEADS, LabelSet

TFIDF_VECTORS = "tfidf.json"  # vectoriser settings and vocabularies
TFIDF_WEIGHTS = "tfidf.safetensors"  # idf vectors and linear weights
_MISSING_CLASS_LOGIT = -1e9

_SETTINGS = (
    "analyzer",
    "ngram_range",
    "lowercase",
    "sublinear_tf",
    "norm",
    "use_idf",
    "smooth_idf",
    "strip_accents",
    "token_pattern",
)


@dataclass
class LinearHead:
    """A fitted linear classifier reduced to what prediction needs."""

    classes: list[str]
    coef: np.ndarray  # (classes, features), or (1, features) for two classes
    intercept: np.ndarray
    _weights: np.ndarray = field(init=False, repr=False)  # (features, classes), C order

    def __post_init__(self) -> None:
        # A sparse x dense product copies a dense operand that is not C-ordered and of the
        # sparse matrix's dtype on every call: `features @ coef.T` copied the whole
        # (features x classes) matrix per request (~11 ms a head at 150k features). The
        # transposed weights are kept C-ordered once; `coef` becomes a view of them.
        self._weights = np.ascontiguousarray(self.coef.T, dtype=np.float32)
        self.coef = self._weights.T

    def decision_function(self, features: sp.csr_matrix) -> np.ndarray:
        scores = features.astype(np.float32, copy=False) @ self._weights + self.intercept
        scores = np.asarray(scores, dtype=np.float64)
        return scores[:, 0] if self.coef.shape[0] == 1 else scores

    @classmethod
    def from_estimator(cls, estimator: Any) -> LinearHead:
        return cls(
            [str(c) for c in estimator.classes_],
            np.ascontiguousarray(estimator.coef_, dtype=np.float32),
            np.ascontiguousarray(estimator.intercept_, dtype=np.float32),
        )


class TfidfHeads:
    """Fitted TF-IDF vectorisers (their features concatenated) and one linear head per task."""

    def __init__(self, vectorizers: dict[str, TfidfVectorizer], heads: dict[str, LinearHead]):
        self.vectorizers = vectorizers
        self.heads = heads

    def features(self, texts: list[str]) -> sp.csr_matrix:
        return sp.hstack([v.transform(texts) for v in self.vectorizers.values()]).tocsr()

    def logits(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Raw decision scores per head, columns in each head's `classes` order."""
        features = self.features(texts)
        return {
            name: as_logits(head.decision_function(features)) for name, head in self.heads.items()
        }

    def classes(self, head: str) -> list[str]:
        return self.heads[head].classes

    def unknown_word_share(self, texts: list[str]) -> np.ndarray | None:
        """Per text, the share of its words missing from the word vocabulary (NaN for a text
        without words): how much of a new complaint the model cannot read. None without a
        word vectoriser."""
        vectorizer = self.vectorizers.get("word")
        if vectorizer is None:
            return None
        preprocess, tokenize = vectorizer.build_preprocessor(), vectorizer.build_tokenizer()
        vocabulary = vectorizer.vocabulary_
        out = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            words = tokenize(preprocess(text))
            if words:
                out[i] = sum(word not in vocabulary for word in words) / len(words)
        return out

    def save(self, model_dir: Path) -> None:
        spec: dict[str, Any] = {"vectorizers": {}, "heads": {}}
        tensors: dict[str, np.ndarray] = {}
        for name, vectorizer in self.vectorizers.items():
            vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
            params = vectorizer.get_params()
            spec["vectorizers"][name] = {
                "settings": {k: params[k] for k in _SETTINGS},
                "vocabulary": vocabulary,
            }
            tensors[f"idf.{name}"] = np.asarray(vectorizer.idf_, dtype=np.float64)
        for name, head in self.heads.items():
            spec["heads"][name] = head.classes
            tensors[f"coef.{name}"] = head.coef
            tensors[f"intercept.{name}"] = head.intercept
        (model_dir / TFIDF_VECTORS).write_text(
            json.dumps(spec, ensure_ascii=False), encoding="utf-8"
        )
        # safetensors writes the raw buffer: Fortran-ordered arrays must be made C-ordered.
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(model_dir / TFIDF_WEIGHTS)
        )

    @classmethod
    def load(cls, model_dir: Path) -> TfidfHeads:
        spec_path, weights_path = model_dir / TFIDF_VECTORS, model_dir / TFIDF_WEIGHTS
        for path in (spec_path, weights_path):
            if not path.is_file():
                raise ModelDirError(f"{path}: weights file is missing")
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise ModelDirError(f"{spec_path}: unreadable or corrupt weights ({exc})") from exc
        try:
            tensors = load_file(str(weights_path))
        except Exception as exc:  # truncated or not a safetensors file
            raise ModelDirError(f"{weights_path}: unreadable or corrupt weights ({exc})") from exc
        try:
            vectorizers = {
                name: _vectorizer(item["settings"], item["vocabulary"], tensors[f"idf.{name}"])
                for name, item in spec["vectorizers"].items()
            }
            heads = {
                name: LinearHead(
                    list(classes), tensors[f"coef.{name}"], tensors[f"intercept.{name}"]
                )
                for name, classes in spec["heads"].items()
            }
        except ModelDirError:
            raise
        except Exception as exc:  # missing tensors or entries
            raise ModelDirError(
                f"{spec_path} / {weights_path.name}: unreadable or corrupt weights ({exc})"
            ) from exc
        width = sum(len(v.vocabulary_) for v in vectorizers.values())
        for name, head in heads.items():
            if head.coef.shape[1] != width:
                raise ModelDirError(
                    f"{weights_path}: head {name!r} expects {head.coef.shape[1]} "
                    f"features, vocabularies give {width}"
                )
        return cls(vectorizers, heads)


def _vectorizer(
    settings: dict[str, Any], vocabulary: list[str], idf: np.ndarray
) -> TfidfVectorizer:
    if len(vocabulary) != len(idf):
        raise ModelDirError(f"vocabulary has {len(vocabulary)} terms but idf {len(idf)}")
    settings = {**settings, "ngram_range": tuple(settings["ngram_range"])}
    vectorizer = TfidfVectorizer(vocabulary=vocabulary, **settings)
    vectorizer.vocabulary_ = {term: i for i, term in enumerate(vocabulary)}
    vectorizer.fixed_vocabulary_ = True
    vectorizer.idf_ = idf
    return vectorizer


class TfidfBackend:
    """The `aduan-tfidf` kind: TF-IDF heads with their scores put into the config's label
    order (a class the linear head never saw gets a logit of -1e9)."""

    model_type: ClassVar[str] = "aduan-tfidf"

    def __init__(self, tfidf: TfidfHeads, labels: dict[str, LabelSet]) -> None:
        self.tfidf = tfidf
        self.index: dict[str, np.ndarray] = {}
        for head in HEADS:
            classes = tfidf.classes(head)
            unknown = set(classes) - set(labels[head].labels)
            if unknown:
                raise ModelDirError(f"weights for head {head!r} predict unknown labels {unknown}")
            position = {c: i for i, c in enumerate(classes)}
            self.index[head] = np.array([position.get(lab, -1) for lab in labels[head].labels])

    def logits(self, texts: list[str]) -> dict[str, np.ndarray]:
        raw = self.tfidf.logits(texts)
        out = {}
        for head, idx in self.index.items():
            scores = np.full((len(texts), len(idx)), _MISSING_CLASS_LOGIT)
            present = idx >= 0
            scores[:, present] = raw[head][:, idx[present]]
            out[head] = scores
        return out

    def unknown_word_share(self, texts: list[str]) -> np.ndarray | None:
        return self.tfidf.unknown_word_share(texts)

    def save(self, model_dir: Path) -> dict[str, Any]:
        self.tfidf.save(model_dir)
        return {}

    @classmethod
    def required_files(cls, config: dict[str, Any]) -> tuple[str, ...]:
        return (TFIDF_VECTORS, TFIDF_WEIGHTS)

    @classmethod
    def load(cls, model_dir: Path, config: dict[str, Any], **options: Any) -> TfidfBackend:
        return cls(TfidfHeads.load(model_dir), head_labels(config))
