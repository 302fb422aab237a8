import asyncio
import threading
import time

import pytest

from aduan.service.batcher import DynamicBatcher, QueueFull


def _run(coro):
    return asyncio.run(coro)


def test_batcher_merges_concurrent_requests_and_returns_each_its_results():
    sizes: list[int] = []
    threads: set[str] = set()

    def predict(batch):
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return [t.upper() for t in batch]

    async def main():
        batcher = DynamicBatcher(predict, max_size=8, max_wait=0.05, on_batch=sizes.append)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}", f"u{i}"]) for i in range(8)))
        await batcher.stop()
        return results

    results = _run(main())
    assert results == [[f"T{i}", f"U{i}"] for i in range(8)]
    assert sum(sizes) == 16 and max(sizes) > 2  # merged, not one request per batch
    assert all(name.startswith("inference") for name in threads)


def test_batcher_without_batching_runs_one_request_at_a_time():
    sizes: list[int] = []

    async def main():
        batcher = DynamicBatcher(lambda b: b, max_size=1, max_wait=0, on_batch=sizes.append)
        await batcher.start()
        await asyncio.gather(*(batcher.submit([i]) for i in range(5)))
        await batcher.stop()

    _run(main())
    assert sizes == [1] * 5


def test_batcher_refuses_when_queue_is_full():
    async def main():
        batcher = DynamicBatcher(lambda b: b, queue_size=3)
        await batcher.start()
        with pytest.raises(QueueFull):
            await batcher.submit([1, 2, 3, 4])
        assert await batcher.submit([1, 2, 3]) == [1, 2, 3]
        await batcher.stop()

    _run(main())


def test_batcher_hands_failures_to_callers_and_keeps_running():
    calls = {"n": 0}

    def predict(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return batch

    async def main():
        batcher = DynamicBatcher(predict, max_wait=0)
        await batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(["a"])
        assert await batcher.submit(["b"]) == ["b"]
        await batcher.stop()

    _run(main())
