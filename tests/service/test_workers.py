"""`ADUAN_INFERENCE_WORKERS`: batches run side by side, one per worker; other model work (an
explanation) still runs alone."""

from __future__ import annotations

import asyncio
import threading

from aduan.service.batcher import DynamicBatcher


def test_two_workers_run_two_batches_at_once_and_a_call_alone() -> None:
    both = threading.Barrier(2, timeout=5)  # passes only when two batches run together
    lock = threading.Lock()
    inside: list[int] = [0]
    events: list[tuple[str, int]] = []

    def predict(batch):
        with lock:
            inside[0] += 1
            events.append(("batch", inside[0]))
        if batch[0] < 100:  # the first two batches must overlap
            both.wait()
        with lock:
            inside[0] -= 1
        return [x * 2 for x in batch]

    def work():
        with lock:
            events.append(("call", inside[0]))
        return "explained"

    async def main():
        batcher = DynamicBatcher(predict, max_size=2, max_wait=0.0, queue_size=100, workers=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit([1, 2]))
        second = asyncio.ensure_future(batcher.submit([3, 4]))
        await asyncio.sleep(0)
        call = asyncio.ensure_future(batcher.call(work, weight=1))
        later = asyncio.ensure_future(batcher.submit([100]))
        results = await asyncio.gather(first, second, call, later)
        await batcher.stop()
        return results

    assert asyncio.run(main()) == [[2, 4], [6, 8], "explained", [200]]
    assert ("call", 0) in events  # nothing else ran beside the call
    assert max(n for kind, n in events if kind == "batch") == 2


def test_the_capacity_estimate_counts_every_worker() -> None:
    batcher = DynamicBatcher(lambda batch: batch, workers=2)
    batcher.rate = 10.0  # texts a second per worker
    batcher._pending = 20
    assert batcher.estimated_wait() == 1.0
