"""Length-bucketed sub-batches: a served batch of mixed lengths is split by length, each part
padded only to its own longest text, and the answers are the ones of one text at a time."""

from __future__ import annotations

import numpy as np

from aduan.model.transformer import ONE_CALL, batched_logits, length_buckets


class RecordingEngine:
    """A network stand-in whose output for a row depends on that row alone (the masked sum
    and count of its ids), recording the (rows, width) of every call."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, input_ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        self.shapes.append(input_ids.shape)
        total = (input_ids * mask).sum(axis=1, keepdims=True).astype(np.float32)
        count = mask.sum(axis=1, keepdims=True).astype(np.float32)
        return {"agency": np.hstack([total, count]), "category": total * 2}


def test_buckets_split_short_from_long_texts() -> None:
    lengths = [128, 10, 12, 11, 127, 9, 126, 13]
    runs = length_buckets(lengths, max_size=32, overhead=16, max_tokens=ONE_CALL)
    assert [sorted(lengths[i] for i in run) for run in runs] == [
        [9, 10, 11, 12, 13],
        [126, 127, 128],
    ]


def test_buckets_cover_every_text_once_within_the_size() -> None:
    rng = np.random.default_rng(3)
    lengths = [int(x) for x in rng.integers(3, 129, size=200)]
    runs = length_buckets(lengths, max_size=32)
    flat = np.concatenate(runs)
    assert sorted(flat.tolist()) == list(range(200))
    assert max(len(run) for run in runs) <= 32
    widths = [lengths[i] for i in flat]
    assert widths == sorted(widths)  # in length order


def test_a_large_call_overhead_keeps_one_batch() -> None:
    lengths = [128, 10, 12, 11]
    assert len(length_buckets(lengths, 32, overhead=10_000, max_tokens=ONE_CALL)) == 1
    # and no overhead: every distinct length its own call
    assert len(length_buckets(lengths, 32, overhead=0, max_tokens=ONE_CALL)) == 4


def test_no_call_holds_more_padded_positions_than_the_cap_but_one_text_always_runs() -> None:
    lengths = [128, 127, 126, *[16] * 40, 300]
    runs = length_buckets(lengths, max_size=32, overhead=16, max_tokens=256)
    for run in runs:
        width = max(lengths[i] for i in run)
        assert len(run) == 1 or len(run) * width <= 256
    short = [len(run) for run in runs if lengths[run[0]] == 16]
    assert len(short) == 3 and sum(short) == 40  # 40 texts of 16 tokens: 3 calls of <= 16
    assert [run.tolist() for run in runs][-1] == [lengths.index(300)]  # alone, over the cap


def test_bucketed_logits_equal_one_text_at_a_time() -> None:
    rng = np.random.default_rng(5)
    ids = [[int(t) for t in rng.integers(5, 500, size=n)] for n in (120, 7, 9, 118, 8, 64, 10)]
    engine = RecordingEngine()
    bucketed = batched_logits(engine, ids, pad=1, batch_size=32)
    alone = [batched_logits(RecordingEngine(), [x], pad=1, batch_size=32) for x in ids]
    for head in ("agency", "category"):
        np.testing.assert_array_equal(bucketed[head], np.vstack([a[head] for a in alone]))
    # split by length: no call pads a 7-10 token text to 120
    assert len(engine.shapes) > 1
    assert sum(rows for rows, _ in engine.shapes) == len(ids)
    assert sum(rows * width for rows, width in engine.shapes) < len(ids) * 120


def test_no_texts_no_call() -> None:
    engine = RecordingEngine()
    assert batched_logits(engine, [], pad=1, batch_size=32) == {}
    assert engine.shapes == []


def test_a_real_network_answers_the_same_bucketed_or_in_one_call(tiny_transformer) -> None:
    from aduan.model.classifier import ComplaintClassifier

    backend = ComplaintClassifier.load(tiny_transformer, engine="torch").backend
    calls: list[tuple[int, int]] = []
    network = backend.engine

    def recording(input_ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(input_ids.shape)
        return network(input_ids, mask)

    backend.engine = recording
    texts = ["sampah"] * 5 + [" ".join(["jalan rusak berlubang besar sekali"] * 8)] * 3
    bucketed = backend.encoder_logits(texts)
    split = list(calls)
    calls.clear()
    backend.length_buckets = False  # ADUAN_LENGTH_BUCKETS=false
    together = backend.encoder_logits(texts)
    assert len(split) == 2 and len(calls) == 1
    for head in together:
        np.testing.assert_allclose(bucketed[head], together[head], atol=1e-4)
