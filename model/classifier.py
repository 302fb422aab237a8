"""`ComplaintClassifier.load(dir).predict(texts)`: label names with calibrated probabilities."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import ModelKind, head_labels, load_kind, read_config
from .calibration import softmax
from .labels import HEADS, LabelSet
from .text import normalize_text

log = logging.getLogger(__name__)

# A text counts as one the model barely reads when at least this share of its words is
# outside its vocabulary (drift monitoring: the training reference and the live window).
MANY_UNKNOWN = 0.5


@dataclass(frozen=True)
class Scored:
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """The prediction for one text: the top-k labels per head, best first. The route is
    decided from it by `pipeline.decide_route`, against the model's `thresholds`."""

    heads: dict[str, list[Scored]]

    def best(self, head: str) -> Scored:
        return self.heads[head][0]


class ComplaintClassifier:
    """A loaded model directory of any kind (TF-IDF baseline or transformer)."""

    def __init__(self, model_dir: Path, config: dict[str, Any], backend: ModelKind) -> None:
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
    def load(
        cls, model_dir: Path | str, engine: str = "auto", threads: int = 0
    ) -> ComplaintClassifier:
        """Load a model directory; raises `ModelDirError` saying why when it is unusable.
        `engine` (`auto`, `torch`, `onnx`) and `threads` matter for transformer directories."""
        model_dir = Path(model_dir)
        config = read_config(model_dir)
        backend = load_kind(model_dir, config, engine=engine, threads=threads)
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

    def unknown_share(self, texts: list[str]) -> np.ndarray | None:
        """Per text, the share of its words outside the model's vocabulary (NaN: no words);
        None when the model kind cannot tell (kinds may offer `unknown_word_share`)."""
        share = getattr(self.backend, "unknown_word_share", None)
        if share is None or not texts:
            return None
        result: np.ndarray | None = share([normalize_text(t) for t in texts])
        return result

    def predict(self, texts: list[str], top_k: int = 3) -> list[Prediction]:
        """Best labels and top-k per head for each text."""
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
        return Prediction(heads)
