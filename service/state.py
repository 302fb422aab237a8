"""What the running service holds: the loaded pipeline (model, resolver, taxonomy), the batcher
that runs it, the drift monitor, and the hot reload that replaces the pipeline.

A reload loads the new model directory beside the old one (in a worker thread, while the old
keeps answering), warms it with one prediction, and swaps the one `pipeline` reference. Every
request captures the pipeline once when it starts, so it finishes on the model it started
with; the old pipeline is freed when the last such request is done. A directory that fails to
load or to predict is refused and the old model keeps serving.

With the `ray` engine the model calls go to Ray Serve replicas (`ray_serve.py`) instead of the
batcher; this process keeps a pipeline of the same directory for what the routes read (labels,
thresholds, explanations), and a reload rolls the replicas over to the new directory.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aduan.model.classifier import ComplaintClassifier
from aduan.model.pipeline import Pipeline, Routed
from aduan.model.registry import Registry, RegistryError
from aduan.model.taxonomy import Taxonomy

from .batcher import DynamicBatcher
from .drift import DriftMonitor
from .observability import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

WARM_UP_TEXT = "warm-up: lampu jalan padam"
RAY = "ray"  # the engine setting that puts the model in Ray Serve replicas
RELOADED, UNCHANGED, REFUSED = "reloaded", "unchanged", "refused"

# What the batcher carries: the pipeline a request started with, the text and the address.
Item = tuple[Pipeline, str, str | None]


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
    batcher: DynamicBatcher[Routed] | None = None
    ready: bool = False
    draining: bool = False  # SIGTERM received: readiness fails while in-flight requests finish
    store: Any = None  # service.storage.Store, when persistence is configured
    drift: DriftMonitor = field(init=False)
    source: str | None = None  # the registry version (or directory) the pipeline came from
    loaded_at: datetime | None = None
    refused: str | None = None  # the last target refused; the watcher does not retry it
    remote: Any = None  # ray_serve.RayClassifier with the ray engine: it answers, not the batcher
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
            path = registry.live_path()
            return path.name, path
        return str(self.settings.model_dir), self.settings.model_dir

    def load(self) -> None:
        """Load the model at start-up; raises `ModelDirError`/`RegistryError` (the service
        must not start)."""
        settings = self.settings
        name, path = self.target()
        pipeline = self._load_pipeline(path)
        if settings.engine == RAY:
            self.remote = self._ray_classifier()
            self.remote.deploy(path)
        self._install(pipeline, name)
        self.batcher = DynamicBatcher(
            self.classify_batch,
            max_size=settings.batch_max_size if settings.batching else 1,
            max_wait=settings.batch_max_wait_ms / 1000 if settings.batching else 0.0,
            queue_size=settings.queue_size,
            max_queue_wait=settings.max_queue_wait_s,
            on_batch=self.metrics.batch_size.observe,
        )

    def _load_pipeline(self, path: Path) -> Pipeline:
        settings = self.settings
        engine = "auto" if settings.engine == RAY else settings.engine
        return Pipeline.load(path, settings.gazetteer, engine, settings.threads)

    def _ray_classifier(self) -> Any:
        from .ray_serve import RayClassifier, RayServeOptions

        settings = self.settings
        return RayClassifier(
            RayServeOptions(
                replicas=settings.ray_replicas,
                max_replicas=settings.ray_max_replicas,
                cpus_per_replica=settings.ray_cpus_per_replica,
                target_ongoing_requests=settings.ray_target_ongoing_requests,
                max_queued_requests=settings.queue_size,
                batch_max_size=settings.batch_max_size,
                batch_max_wait_ms=settings.batch_max_wait_ms,
                retries=settings.ray_retries,
                address=settings.ray_address or None,
                gazetteer=settings.gazetteer,
            )
        )

    def close(self) -> None:
        """Release what serving holds outside this process (the Ray Serve application)."""
        if self.remote is not None:
            self.remote.shutdown()
            self.remote = None

    def _install(self, pipeline: Pipeline, name: str) -> None:
        # One reference assignment: a request sees the old pipeline or the new, never a mix.
        self.pipeline = pipeline
        self.source = name
        self.loaded_at = datetime.now(UTC)
        self.drift.reset(pipeline.version, pipeline.metrics.get("reference"))
        self.metrics.model_loaded_now(pipeline.version)

    async def classify(self, items: Sequence[tuple[str, str | None]]) -> list[Routed]:
        """(text, address) pairs through the batcher, all answered by the pipeline that is
        live now, even when a reload swaps it meanwhile; a full queue raises `QueueFull`."""
        assert self.batcher is not None
        pipeline = self.pipeline
        assert pipeline is not None
        if self.remote is not None:
            answers = await self.remote.classify(items)
        else:
            answers = await self.batcher.submit(
                [(pipeline, text, address) for text, address in items]
            )
        self.drift.observe(answers)
        return answers

    async def warm_up(self) -> None:
        """One prediction through the batcher (its thread and the model's first call), or
        through the replicas."""
        assert self.batcher is not None and self.pipeline is not None
        if self.remote is not None:
            await self.remote.classify([(WARM_UP_TEXT, None)])
            return
        await self.batcher.submit([(self.pipeline, WARM_UP_TEXT, None)])

    def classify_batch(self, items: list[Item]) -> list[Routed]:
        """Blocking inference for one merged batch; runs in the batcher's worker thread. Items
        that started on different pipelines (a reload happened) run on their own one each."""
        groups: dict[int, list[int]] = {}
        for i, (pipeline, _, _) in enumerate(items):
            groups.setdefault(id(pipeline), []).append(i)
        out: list[Routed | None] = [None] * len(items)
        for indices in groups.values():
            pipeline = items[indices[0]][0]
            answers = pipeline.run([(items[i][1], items[i][2]) for i in indices])
            for i, answer in zip(indices, answers, strict=True):
                out[i] = answer
        return [answer for answer in out if answer is not None]

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
                if self.remote is not None:  # a rolling update of the replicas
                    await asyncio.to_thread(self.remote.deploy, path)
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
