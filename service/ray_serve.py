"""`aduan serve --backend ray`: the classifier as Ray Serve replicas behind the same FastAPI app.

The FastAPI app stays the HTTP surface: the same routes and answers, storage, the operator
routes, metrics and reload. Only the model calls move: this is the `ray` `Backend`
(`backends.py`), which hands each request's items to the `Classifier` deployment through a
deployment handle instead of the in-process batcher. Each replica loads the model directory
into its own `Pipeline` (on the configured engine; `auto`: ONNX Runtime when the directory has
an exported file) and merges concurrent calls into one model call with `@serve.batch`; Ray
Serve's autoscaler keeps between `replicas` and `max_replicas` of them, adding one when the
requests in flight per replica pass the target.

A replica that dies mid-request fails the calls it held: each is retried on another replica
(`retries` times), then answered 503 with Retry-After, so a client that retries loses nothing;
Ray Serve meanwhile starts a replacement. Classification stores nothing, so a retry is safe.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

from aduan.model.pipeline import WARM_UP_TEXT, Pipeline, Routed
from aduan.model.ray_runtime import connect

from .batcher import BackendUnavailable, QueueFull
from .settings import Settings

R = TypeVar("R")

log = logging.getLogger(__name__)

APP_NAME = "aduan"
DEPLOYMENT = "Classifier"
RETRY_PAUSE_S = 0.2

Item = tuple[str, str | None]


@dataclass(frozen=True)
class RayServeOptions:
    replicas: int = 2
    max_replicas: int = 0  # 0: as many as `replicas` (no autoscaling)
    cpus_per_replica: float = 1.0
    target_ongoing_requests: float = 4.0
    max_ongoing_requests: int = 64
    max_queued_requests: int = 1024
    batch_max_size: int = 32
    batch_max_wait_ms: float = 5.0
    retries: int = 2
    address: str | None = None
    gazetteer: Path | None = None
    engine: str = "auto"


class ClassifierReplica:
    """One replica: a loaded pipeline, its concurrent calls merged by `@serve.batch` into one
    `Pipeline.run` (while it runs, the next calls queue: the batch is whatever waited)."""

    def __init__(
        self,
        model_dir: str,
        gazetteer: str | None,
        engine: str,
        threads: int,
        max_size: int,
        wait_s: float,
    ) -> None:
        self.pipeline = Pipeline.load(
            Path(model_dir), Path(gazetteer) if gazetteer else None, engine, threads
        )
        batched: Any = self.run_batch  # the decorator's setters are not in its type
        batched.set_max_batch_size(max_size)
        batched.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def run_batch(self, items: list[Item]) -> list[Routed]:
        return self.pipeline.run(items)

    async def classify(self, items: list[Item]) -> list[Routed]:
        """A request's (text, address) pairs, answered in order."""
        return list(await asyncio.gather(*(self.run_batch(item) for item in items)))

    def describe(self) -> dict[str, Any]:
        """Which process and model version answer (tests, operators)."""
        return {"pid": os.getpid(), "model_version": self.pipeline.version}


def build_app(model_dir: Path, options: RayServeOptions) -> Any:
    """The Ray Serve application: one `Classifier` deployment, autoscaled."""
    replicas = max(options.replicas, 1)
    deployment = serve.deployment(
        name=DEPLOYMENT,
        ray_actor_options={"num_cpus": options.cpus_per_replica},
        autoscaling_config={
            "min_replicas": replicas,
            "initial_replicas": replicas,
            "max_replicas": max(options.max_replicas, replicas),
            "target_ongoing_requests": options.target_ongoing_requests,
        },
        max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
        health_check_period_s=2.0,
        graceful_shutdown_timeout_s=10.0,
    )(ClassifierReplica)
    gazetteer = options.gazetteer.resolve() if options.gazetteer else None
    return deployment.bind(
        str(model_dir.resolve()),
        str(gazetteer) if gazetteer and gazetteer.is_file() else None,
        options.engine,
        max(1, round(options.cpus_per_replica)),
        options.batch_max_size,
        options.batch_max_wait_ms / 1000,
    )


class RayServeBackend:
    """The `ray` backend, the front's side: deploys the application and sends it requests,
    with retries."""

    name = "ray"

    def __init__(self, options: RayServeOptions) -> None:
        self.options = options
        self.handle: Any = None
        self._started_ray = False
        self.failed_calls = 0  # calls a dying replica dropped (each retried)

    @classmethod
    def from_settings(cls, settings: Settings) -> RayServeBackend:
        """The backend `ADUAN_RAY_*` (and the batching and engine settings) describe."""
        return cls(
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
                engine=settings.engine,
            )
        )

    async def start(self) -> None:
        """Nothing to start: `deploy` started the replicas."""

    def deploy(self, model_dir: Path) -> None:
        """Deploy (or roll the replicas over to) `model_dir`; returns when they are running.
        Blocking: call it from a worker thread once the service runs."""
        import ray

        self._started_ray = self._started_ray or not ray.is_initialized()
        connect(self.options.address)
        # No HTTP proxy of Ray's own: the FastAPI app is the HTTP surface.
        serve.start(proxy_location="Disabled")
        handle = serve.run(build_app(model_dir, self.options), name=APP_NAME, route_prefix=None)
        self.handle = handle.options(method_name="classify")
        log.info("Ray Serve application %r runs %s", APP_NAME, model_dir)

    async def classify(self, pipeline: Pipeline, items: Sequence[Item]) -> list[Routed]:
        """Answers from a replica (each holds its own copy of the deployed model, so the
        front's `pipeline` is not sent); a dead replica's call is retried on another."""
        assert self.handle is not None, "deploy() first"
        failure: Exception | None = None
        for attempt in range(self.options.retries + 1):
            try:
                answers: list[Routed] = await self.handle.remote(list(items))
                return answers
            except BackPressureError as exc:
                raise QueueFull from exc
            except (RayActorError, ActorUnavailableError) as exc:
                failure = exc
                self.failed_calls += 1
                log.warning("a classifier replica failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(RETRY_PAUSE_S * (attempt + 1))
        raise BackendUnavailable("no classifier replica answered") from failure

    def replicas(self) -> list[dict[str, Any]]:
        """`describe()` of the running replicas (asks until every one has answered once)."""
        status = serve.status().applications[APP_NAME].deployments[DEPLOYMENT]
        states = status.replica_states or {}
        count = sum(n for state, n in states.items() if getattr(state, "value", state) == "RUNNING")
        handle = self.handle.options(method_name="describe")
        seen: dict[int, dict[str, Any]] = {}
        for _ in range(50 * max(count, 1)):
            answer = handle.remote().result()
            seen[answer["pid"]] = answer
            if len(seen) >= count:
                break
        return list(seen.values())

    async def warm_up(self, pipeline: Pipeline) -> None:
        await self.classify(pipeline, [(WARM_UP_TEXT, None)])

    async def call(self, work: Callable[[], R], weight: int) -> R:
        """The front's own pipeline answers (explanations); the replicas keep classifying."""
        return await asyncio.to_thread(work)

    async def close(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        """Delete the application; stop Ray when this process started it."""
        import ray

        if not ray.is_initialized():
            return
        serve.delete(APP_NAME)
        if self._started_ray:
            serve.shutdown()
            ray.shutdown()
