"""What the running service holds: the loaded pipeline (model, resolver, taxonomy), the
classify backend that runs it, the drift monitor, and the hot reload that replaces the
pipeline.

A reload loads the new model directory beside the old one (in a worker thread, while the old
keeps answering), warms it with one prediction, and swaps the one `pipeline` reference. Every
request captures the pipeline once when it starts, so it finishes on the model it started
with; the old pipeline is freed when the last such request is done. A directory that fails to
load or to predict is refused and the old model keeps serving.

The backend (`backends.py`: the in-process batcher, or Ray Serve replicas) is chosen once at
start; a reload deploys the new directory to it (for Ray, a rolling update of the replicas).
This process always keeps a pipeline of the directory for what the routes read (labels,
thresholds, explanations).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aduan.model.classifier import ComplaintClassifier
from aduan.model.pipeline import ROUTE_HEAD, WARM_UP_TEXT, Pipeline, Routed
from aduan.model.registry import Registry, RegistryError
from aduan.model.taxonomy import Taxonomy

from .backends import Backend, make_backend
from .drift import DriftMonitor
from .observability import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

RELOADED, UNCHANGED, REFUSED = "reloaded", "unchanged", "refused"


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did: `reloaded`, `unchanged` (the live version is already serving) or
    `refused` (the target failed to load or warm up; `model_version` still serves)."""

    outcome: str
    model_version: str | None
    previous: str | None
    target: str | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "model_version": self.model_version,
            "previous": self.previous,
            "target": self.target,
            "error": self.error,
        }


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    pipeline: Pipeline | None = None
    backend: Backend | None = None  # where classify runs: chosen once, in `load`
    ready: bool = False
    draining: bool = False  # SIGTERM received: readiness fails while in-flight requests finish
    store: Any = None  # service.storage.Store, when persistence is configured
    drift: DriftMonitor = field(init=False)
    source: str | None = None  # the registry version (or directory) the pipeline came from
    loaded_at: datetime | None = None
    refused: str | None = None  # the last target refused; the watcher does not retry it
    _reload_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.drift = DriftMonitor(self.settings.drift_window, self.settings.feedback_window_days)
        self.metrics.registry.register(self.drift)

    @property
    def classifier(self) -> ComplaintClassifier | None:
        return self.pipeline.classifier if self.pipeline else None

    @property
    def taxonomy(self) -> Taxonomy | None:
        return self.pipeline.taxonomy if self.pipeline else None

    @property
    def validation(self) -> dict[str, Any]:
        return self.pipeline.metrics if self.pipeline else {}

    @property
    def version(self) -> str | None:
        """The model version answering new requests."""
        pipeline = self.pipeline
        return pipeline.version if pipeline else None

    @property
    def registry(self) -> Registry | None:
        return Registry(self.settings.registry) if self.settings.registry else None

    def target(self) -> tuple[str, Path]:
        """(name, directory) of what should be serving: the registry's live version, else
        the configured model directory. Raises `RegistryError` when the registry has none."""
        registry = self.registry
        if registry is not None:
            path = registry.require().live_path()
            return path.name, path
        return str(self.settings.model_dir), self.settings.model_dir

    def load(self) -> None:
        """Load the model and deploy it to the configured backend at start-up; raises
        `ModelDirError`/`RegistryError` (the service must not start)."""
        name, path = self.target()
        pipeline = self._load_pipeline(path)
        backend = make_backend(self.settings, self.metrics.batch_size.observe)
        backend.deploy(path)
        self.backend = backend
        self._install(pipeline, name)

    async def start(self) -> None:
        """Let the backend take calls (the lifespan, after `load`)."""
        assert self.backend is not None
        await self.backend.start()

    def _load_pipeline(self, path: Path) -> Pipeline:
        settings = self.settings
        threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.inference_workers)
        pipeline = Pipeline.load(path, settings.gazetteer, settings.engine, threads)
        backend = pipeline.classifier.backend
        if hasattr(backend, "length_buckets"):
            backend.length_buckets = settings.length_buckets
        return pipeline

    async def close(self) -> None:
        """Stop the backend and release what it holds (the Ray Serve application)."""
        if self.backend is not None:
            await self.backend.close()
            self.backend = None

    def apply_threshold_floor(self, pipeline: Pipeline) -> float:
        """The auto-route threshold: the model's own, raised to `auto_route_threshold` when
        that is set (the operator's bar, without retraining; the local backend's pipeline)."""
        classifier = pipeline.classifier
        own = float(classifier.config.get("thresholds", {}).get(ROUTE_HEAD, 1.0))
        floor = getattr(self.settings, "auto_route_threshold", None)
        classifier.thresholds[ROUTE_HEAD] = own if floor is None else max(own, floor)
        return classifier.thresholds[ROUTE_HEAD]

    def _install(self, pipeline: Pipeline, name: str) -> None:
        self.apply_threshold_floor(pipeline)
        # One reference assignment: a request sees the old pipeline or the new, never a mix.
        self.pipeline = pipeline
        self.source = name
        self.loaded_at = datetime.now(UTC)
        self.drift.reset(pipeline.version, pipeline.metrics.get("reference"))
        self.metrics.model_loaded_now(pipeline.version)

    async def classify(self, items: Sequence[tuple[str, str | None]]) -> list[Routed]:
        """(text, address) pairs through the backend, all answered by the pipeline that is
        live now, even when a reload swaps it meanwhile; a full queue raises `QueueFull`."""
        backend, pipeline = self.backend, self.pipeline
        assert backend is not None and pipeline is not None
        answers = await backend.classify(pipeline, items)
        self.drift.observe(answers)
        return answers

    async def warm_up(self) -> None:
        """One prediction through the backend (its threads and the model's first call)."""
        assert self.backend is not None and self.pipeline is not None
        await self.backend.warm_up(self.pipeline)

    def _load_and_warm(self, path: Path) -> Pipeline:
        pipeline = self._load_pipeline(path)
        [answer] = pipeline.run([(WARM_UP_TEXT, None)])
        score = answer.prediction.best("agency").score
        if not math.isfinite(score):
            raise ValueError(f"the warm-up prediction gave a score of {score}")
        return pipeline

    async def reload(self, reason: str) -> ReloadOutcome:
        """Load what should be serving beside the current model, warm it, and swap; refuse it
        (the current model keeps serving) when it fails. One reload runs at a time."""
        async with self._reload_lock:
            previous = self.version
            try:
                name, path = await asyncio.to_thread(self.target)
            except (RegistryError, OSError) as exc:
                return self._refuse(None, previous, str(exc), reason)
            if self.registry is not None and name == self.source:
                self.metrics.reloads.labels(UNCHANGED).inc()
                return ReloadOutcome(UNCHANGED, previous, previous, name)
            try:
                pipeline = await asyncio.to_thread(self._load_and_warm, path)
                assert self.backend is not None
                await asyncio.to_thread(self.backend.deploy, path)  # Ray: a rolling update
            except Exception as exc:  # ModelDirError, corrupt weights, a failing prediction
                return self._refuse(name, previous, str(exc), reason)
            self._install(pipeline, name)
            self.refused = None
            self.metrics.reloads.labels(RELOADED).inc()
            log.info("model %s now answers (was %s; %s)", pipeline.version, previous, reason)
            return ReloadOutcome(RELOADED, pipeline.version, previous, name)

    def _refuse(
        self, name: str | None, previous: str | None, error: str, reason: str
    ) -> ReloadOutcome:
        self.refused = name
        self.metrics.reloads.labels(REFUSED).inc()
        log.error("reload (%s) of %s refused, %s keeps serving: %s", reason, name, previous, error)
        return ReloadOutcome(REFUSED, previous, previous, name, error)

    async def watch_registry(self) -> None:
        """Reload when the registry's live pointer names another version (checked every
        `reload_interval_s`); a refused version is not retried until the pointer moves."""
        registry = self.registry
        if registry is None:
            return
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                live = await asyncio.to_thread(registry.live)
                if live and live not in (self.source, self.refused):
                    await self.reload("the live pointer moved")
            except asyncio.CancelledError:
                raise
            except Exception:  # an unreadable pointer now must not stop the next check
                log.exception("checking the registry %s failed", registry.root)
