"""`ComplaintClassifier.load(dir).predict(texts)`: label names with calibrated probabilities."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from model.artifacts import ModelDirError, head_labels, read_config
from model.calibration import softmax
from model.labels import HEADS, LabelSet
from model.text import normalize_text

log = logging.getLogger(__name__)

ROUTE_HEAD = "agency"
_MISSING_CLASS_LOGIT = -1e9


class Backend(Protocol):
    """Anything that maps texts to raw per-head scores in the config's label order."""

    def logits(self, texts: list[str]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Scored:
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """The prediction for one text: best label and top-k per head, and the routing decision."""

    heads: dict[str, list[Scored]]
    route: str

    def best(self, head: str) -> Scored:
        return self.heads[head][0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for head, ranked in self.heads.items():
            out[head] = {"label": ranked[0].label, "score": ranked[0].score}
            out[f"{head}_top_k"] = [{"label": s.label, "score": s.score} for s in ranked]
        out["route"] = self.route
        return out


class ComplaintClassifier:
    """A loaded model directory of any kind (TF-IDF baseline or transformer)."""

    def __init__(self, model_dir: Path, config: dict[str, Any], backend: Backend) -> None:
        self.model_dir = model_dir
        self.config = config
        self.backend = backend
        self.labels: dict[str, LabelSet] = head_labels(config)
        self.temperatures: dict[str, float] = {
            head: float(config.get("temperature", {}).get(head, 1.0)) for head in HEADS
        }
        self.thresholds: dict[str, float] = {
            head: float(config.get("thresholds", {}).get(head, 1.0)) for head in HEADS
        }

    @classmethod
    def load(cls, model_dir: Path | str) -> ComplaintClassifier:
        """Load a model directory; raises `ModelDirError` saying why when it is unusable."""
        model_dir = Path(model_dir)
        config = read_config(model_dir)
        backend: Backend
        if config["model_type"] == "aduan-tfidf":
            from model.tfidf import TfidfHeads

            tfidf = TfidfHeads.load(model_dir)
            backend = TfidfBackend(tfidf, head_labels(config))
        else:
            from model.network import TransformerBackend

            backend = TransformerBackend.load(model_dir, config)
        log.info("loaded %s model from %s", config["model_type"], model_dir)
        return cls(model_dir, config, backend)

    @property
    def version(self) -> str:
        return str(self.config.get("model_version", "unknown"))

    @property
    def classes_(self) -> dict[str, tuple[str, ...]]:
        return {head: labels.labels for head, labels in self.labels.items()}

    def predict_proba(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Calibrated probabilities per head, columns in `classes_` order."""
        cleaned = [normalize_text(t) for t in texts]
        logits = self.backend.logits(cleaned)
        return {head: softmax(logits[head], self.temperatures[head]) for head in HEADS}

    def predict(self, texts: list[str], top_k: int = 3) -> list[Prediction]:
        """Best labels, top-k per head and the auto/review route for each text."""
        if not texts:
            return []
        proba = self.predict_proba(texts)
        return [
            self._prediction({h: p[i] for h, p in proba.items()}, top_k) for i in range(len(texts))
        ]

    def _prediction(self, row: dict[str, np.ndarray], top_k: int) -> Prediction:
        heads: dict[str, list[Scored]] = {}
        for head, probs in row.items():
            order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
            heads[head] = [Scored(self.labels[head].labels[i], float(probs[i])) for i in order]
        route = "auto" if heads[ROUTE_HEAD][0].score >= self.thresholds[ROUTE_HEAD] else "review"
        return Prediction(heads, route)


class TfidfBackend:
    """Puts scikit-learn's `classes_` columns into the config's label order."""

    def __init__(self, tfidf: Any, labels: dict[str, LabelSet]) -> None:
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
