"""What the running service holds: the loaded pipeline (model, resolver, taxonomy) and the
batcher that runs it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aduan.model.classifier import ComplaintClassifier
from aduan.model.pipeline import Pipeline, Routed
from aduan.model.taxonomy import Taxonomy

from .batcher import DynamicBatcher
from .observability import Metrics
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    pipeline: Pipeline | None = None
    batcher: DynamicBatcher[Routed] | None = None
    ready: bool = False
    store: Any = None  # service.storage.Store, when persistence is configured

    @property
    def classifier(self) -> ComplaintClassifier | None:
        return self.pipeline.classifier if self.pipeline else None

    @property
    def taxonomy(self) -> Taxonomy | None:
        return self.pipeline.taxonomy if self.pipeline else None

    @property
    def validation(self) -> dict[str, Any]:
        return self.pipeline.metrics if self.pipeline else {}

    def load(self) -> None:
        """Load the model directory; raises `ModelDirError` (the service must not start)."""
        settings = self.settings
        self.pipeline = Pipeline.load(
            settings.model_dir, settings.gazetteer, settings.engine, settings.threads
        )
        self.batcher = DynamicBatcher(
            self.classify_batch,
            max_size=settings.batch_max_size if settings.batching else 1,
            max_wait=settings.batch_max_wait_ms / 1000 if settings.batching else 0.0,
            queue_size=settings.queue_size,
            on_batch=self.metrics.batch_size.observe,
        )

    def classify_batch(self, items: list[tuple[str, str | None]]) -> list[Routed]:
        """Blocking inference for one merged batch; runs in the batcher's worker thread."""
        assert self.pipeline is not None
        return self.pipeline.run(items)
