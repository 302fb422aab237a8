"""Where `classify`'s model calls run, chosen once at start from `Settings.backend`: `local`,
the in-process dynamic batcher (`batcher.py`) running the pipeline each request started with,
or `ray`, Ray Serve replicas (`ray_serve.py`) behind the same FastAPI app. Both answer through
`Backend`, so `ServiceState` never asks which one it holds; `make_backend` is the one place
that decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from aduan.model.pipeline import WARM_UP_TEXT, Pipeline, Routed
from aduan.model.ray_runtime import RAY

from .batcher import DynamicBatcher
from .settings import Settings

R = TypeVar("R")

# A (text, address) pair to classify.
Item = tuple[str, str | None]
# What the local batcher carries: the pipeline a request started with, the text and address.
Job = tuple[Pipeline, str, str | None]


class Backend(Protocol):
    """Runs the model calls of `classify`; a full queue raises `batcher.QueueFull`, no model
    to answer `batcher.BackendUnavailable`."""

    name: str

    async def start(self) -> None:
        """Begin taking calls (after `deploy` of the first model)."""

    def deploy(self, path: Path) -> None:
        """Serve the model directory `path` from now on; blocking (a worker thread once the
        service runs). A backend that runs the state's pipeline has nothing to do."""

    async def classify(self, pipeline: Pipeline, items: Sequence[Item]) -> list[Routed]:
        """Answers for `items` in order, from `pipeline` (the one live when the request
        started) or from the backend's own copy of the same model."""

    async def warm_up(self, pipeline: Pipeline) -> None:
        """One prediction through the whole path (threads, first model call)."""

    async def call(self, work: Callable[[], R], weight: int) -> R:
        """Run the blocking `work` on this process's model (an explanation) in queue order
        where the backend has a queue, counted as `weight` texts."""

    async def close(self) -> None:
        """Stop taking calls and release what the backend holds."""


class LocalBackend:
    """The in-process dynamic batcher: concurrent requests merged into one model call in one
    worker thread, each item run on the pipeline its request started with."""

    name = "local"

    def __init__(self, settings: Settings, on_batch: Callable[[int], None] | None = None) -> None:
        self.batcher: DynamicBatcher[Routed] = DynamicBatcher(
            run_jobs,
            max_size=settings.batch_max_size if settings.batching else 1,
            max_wait=settings.batch_max_wait_ms / 1000 if settings.batching else 0.0,
            queue_size=settings.queue_size,
            max_queue_wait=settings.max_queue_wait_s,
            on_batch=on_batch,
            workers=settings.inference_workers,
        )

    async def start(self) -> None:
        await self.batcher.start()

    def deploy(self, path: Path) -> None:
        """Nothing to do: every call carries its pipeline."""

    async def classify(self, pipeline: Pipeline, items: Sequence[Item]) -> list[Routed]:
        return await self.batcher.submit([(pipeline, text, address) for text, address in items])

    async def warm_up(self, pipeline: Pipeline) -> None:
        await self.classify(pipeline, [(WARM_UP_TEXT, None)])

    async def call(self, work: Callable[[], R], weight: int) -> R:
        return await self.batcher.call(work, weight)

    async def close(self) -> None:
        await self.batcher.stop()


def run_jobs(jobs: list[Job]) -> list[Routed]:
    """Blocking inference for one merged batch (the batcher's worker thread). Jobs that
    started on different pipelines (a reload happened) run on their own one each."""
    groups: dict[int, list[int]] = {}
    for i, (pipeline, _, _) in enumerate(jobs):
        groups.setdefault(id(pipeline), []).append(i)
    out: list[Routed | None] = [None] * len(jobs)
    for indices in groups.values():
        pipeline = jobs[indices[0]][0]
        answers = pipeline.run([(jobs[i][1], jobs[i][2]) for i in indices])
        for i, answer in zip(indices, answers, strict=True):
            out[i] = answer
    return [answer for answer in out if answer is not None]


def make_backend(settings: Settings, on_batch: Callable[[int], None] | None = None) -> Backend:
    """The backend `settings.backend` names; Ray is imported only when it is chosen."""
    if settings.backend == RAY:
        from .ray_serve import RayServeBackend

        return RayServeBackend.from_settings(settings)
    return LocalBackend(settings, on_batch)
