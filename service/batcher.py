"""Dynamic batching: concurrent requests are merged into batches run by worker threads.

Each request submits its texts as one job. A worker takes the first waiting job, then keeps
adding jobs until the batch holds `max_size` texts or `max_wait` seconds have passed, runs the
model once in its own thread (the event loop never blocks) and hands each caller its slice.
With `workers` > 1, that many batches run at once (one per core, each model call on one
thread: no barrier between two cores' halves of every matrix product). Other model work (an
explanation: dozens of predictions of one text) is queued with `call` as a job that weighs as
many texts, so it waits its turn, is shed like them under overload, and never runs beside a
batch on the same cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """More texts are waiting than the queue allows, or they would wait longer than
    `max_queue_wait`; `retry_after` is the estimated seconds until there is room."""

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__(f"overloaded; retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class BackendUnavailable(Exception):
    """No model worker could answer (a Ray Serve replica died and the retries failed too)."""


@dataclass
class _Job(Generic[T]):
    texts: Sequence[Any]
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)
    call: Callable[[], Any] | None = None  # other model work, run alone; `texts` its weight


class DynamicBatcher(Generic[T]):
    """Runs `predict(batch) -> results` (one result per input) over merged requests."""

    def __init__(
        self,
        predict: Callable[[list[Any]], list[T]],
        *,
        max_size: int = 32,
        max_wait: float = 0.005,
        queue_size: int = 1024,
        max_queue_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
    ) -> None:
        self.predict = predict
        self.max_size = max_size
        self.max_wait = max_wait
        self.queue_size = queue_size
        self.max_queue_wait = max_queue_wait
        self.on_batch = on_batch
        self.workers = max(1, workers)
        self.shed = 0  # jobs refused as overload (for tests and metrics)
        # Texts per second one worker sustains, as measured on recent batches (EWMA); None
        # until the first batch ran.
        self.rate: float | None = None
        self._queue: asyncio.Queue[_Job[T]] = asyncio.Queue()
        # call jobs met while filling a batch: next, in order
        self._held: deque[_Job[T]] = deque()
        self._pending = 0
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="inference"
        )
        self._tasks: list[asyncio.Task[None]] = []
        # Batches running, and whether a call job waits to run alone: it waits for the
        # running batches to end, and no batch starts meanwhile.
        self._running = 0
        self._calling = False
        self._turn: asyncio.Condition | None = None

    async def start(self) -> None:
        self._turn = asyncio.Condition()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"batcher-{i}") for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        waiting = list(self._held)
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(RuntimeError("service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def estimated_wait(self, extra: int = 0) -> float:
        """Seconds until `extra` more texts would be answered, at the measured rate."""
        if not self.rate:
            return 0.0
        return (self._pending + extra) / (self.rate * self.workers)

    def _admit(self, weight: int) -> None:
        wait = self.estimated_wait(weight)
        too_slow = self.max_queue_wait > 0 and self._pending > 0 and wait > self.max_queue_wait
        if self._pending + weight > self.queue_size or too_slow:
            self.shed += 1
            raise QueueFull(max(wait - self.max_queue_wait, 1.0) if too_slow else max(wait, 1.0))
        self._pending += weight

    async def submit(self, texts: Sequence[Any]) -> list[T]:
        """Queue the texts and wait for their results; raises `QueueFull` when overloaded:
        more than `queue_size` texts waiting, or a wait longer than `max_queue_wait` (load is
        shed at the door, with an honest Retry-After, rather than queued until clients time
        out)."""
        self._admit(len(texts))
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(texts, future))
        return await future

    async def call(self, work: Callable[[], R], weight: int) -> R:
        """Run `work` in the inference thread, alone, in queue order, counted as `weight`
        texts (at most `queue_size`); raises `QueueFull` like `submit`."""
        weight = max(1, min(weight, self.queue_size))
        self._admit(weight)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job([None] * weight, future, call=work))
        return await future

    def _measure(self, size: int, seconds: float) -> None:
        rate = size / max(seconds, 1e-6)
        self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate

    async def _collect(self) -> list[_Job[T]]:
        """Jobs of texts for one batch, or a single call job."""
        first = self._held.popleft() if self._held else await self._queue.get()
        jobs = [first]
        if first.call is not None:
            return jobs
        size = len(first.texts)
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                job = (
                    self._queue.get_nowait()
                    if not self._queue.empty()
                    else await asyncio.wait_for(self._queue.get(), remaining)
                )
            except TimeoutError:
                break
            if job.call is not None:  # runs after this batch
                self._held.append(job)
                break
            jobs.append(job)
            size += len(job.texts)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        turn = self._turn
        assert turn is not None
        while True:
            jobs = await self._collect()
            if jobs[0].call is not None:
                async with turn:
                    self._calling = True
                    await turn.wait_for(lambda: self._running == 0)
                try:
                    await self._run_call(jobs[0])
                finally:
                    async with turn:
                        self._calling = False
                        turn.notify_all()
                continue
            async with turn:
                await turn.wait_for(lambda: not self._calling)
                self._running += 1
            try:
                await self._run_batch(loop, jobs)
            finally:
                async with turn:
                    self._running -= 1
                    turn.notify_all()

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job[T]]) -> None:
        batch = [text for job in jobs for text in job.texts]
        self._pending -= len(batch)
        if self.on_batch:
            self.on_batch(len(batch))
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.predict, batch)
        except Exception as exc:  # hand the failure to every waiting caller
            log.exception("inference failed for a batch of %d", len(batch))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self._measure(len(batch), time.perf_counter() - started)
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            if not job.future.done():  # the caller may have gone away
                job.future.set_result(results[start:end])
            start = end

    async def _run_call(self, job: _Job[T]) -> None:
        assert job.call is not None
        self._pending -= len(job.texts)
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, job.call)
        except Exception as exc:  # the caller's error (e.g. a ValueError), not the worker's
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result(result)
