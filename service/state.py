"""What the running service holds: the model, the location resolver and the batcher."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aduan.model import artifacts
from aduan.model.classifier import ComplaintClassifier, Prediction
from aduan.model.location import LocationResolver, Unit, load_resolver
from aduan.model.taxonomy import KECAMATAN, KELURAHAN, Taxonomy

from .batcher import DynamicBatcher
from .observability import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

MAX_TOP_K = 10


@dataclass
class Classified:
    """One item's prediction with its resolved location."""

    prediction: Prediction
    unit: Unit | None


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    classifier: ComplaintClassifier | None = None
    resolver: LocationResolver | None = None
    taxonomy: Taxonomy | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    batcher: DynamicBatcher[Classified] | None = None
    ready: bool = False
    store: Any = None  # service.storage.Store, when persistence is configured

    def load(self) -> None:
        """Load the model directory; raises `ModelDirError` (the service must not start)."""
        model_dir = self.settings.model_dir
        self.classifier = ComplaintClassifier.load(model_dir)
        self.taxonomy = Taxonomy.load(model_dir / artifacts.TAXONOMY)
        metrics_path = model_dir / artifacts.METRICS
        if metrics_path.is_file():
            self.validation = json.loads(metrics_path.read_text(encoding="utf-8"))
        self.resolver = self._load_resolver()
        settings = self.settings
        self.batcher = DynamicBatcher(
            self.classify_batch,
            max_size=settings.batch_max_size if settings.batching else 1,
            max_wait=settings.batch_max_wait_ms / 1000 if settings.batching else 0.0,
            queue_size=settings.queue_size,
            on_batch=self.metrics.batch_size.observe,
        )

    def _load_resolver(self) -> LocationResolver | None:
        resolver = load_resolver(self.settings.model_dir, self.settings.gazetteer)
        if resolver is None:
            log.warning(
                "gazetteer %s not found: locations will not be resolved", self.settings.gazetteer
            )
        return resolver

    def classify_batch(self, items: list[tuple[str, str | None]]) -> list[Classified]:
        """Blocking inference for one merged batch; runs in the batcher's worker thread."""
        assert self.classifier is not None
        predictions = self.classifier.predict([text for text, _ in items], top_k=MAX_TOP_K)
        out = []
        for (text, address), prediction in zip(items, predictions, strict=True):
            unit = self.resolver.resolve(address, text) if self.resolver else None
            out.append(Classified(prediction, unit))
        return out

    @staticmethod
    def office(agency: str, unit: Unit | None) -> str | None:
        """The concrete office for the `Kelurahan`/`Kecamatan` agency classes."""
        if unit is None:
            return None
        if agency == KELURAHAN and unit.kelurahan:
            return f"Kelurahan {unit.kelurahan}"
        if agency == KECAMATAN and unit.kecamatan:
            return f"Kecamatan {unit.kecamatan}"
        return None
