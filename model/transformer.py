"""The transformer model kind (`aduan-transformer`): an encoder with one linear head per task,
mixed with a topic routing table and a TF-IDF model. Importing this module does not import
torch: the network runs on an engine chosen at load time (PyTorch, or ONNX Runtime from an
exported file), and tokenisation uses the `tokenizers` library directly.

A model directory of this kind holds, beside the common contract (see `artifacts.py`):

    encoder/               a standard Hugging Face folder (config.json, model.safetensors and the
                           tokenizer files): `AutoModel`/`AutoTokenizer.from_pretrained` load it
    heads.safetensors      heads.<name>.weight/bias on the mean-pooled encoder output
    model.onnx             optional (`aduan export`): encoder + pooling + heads for ONNX Runtime,
    model.int8.onnx        and its int8 (dynamically quantised) copy
    routing.json           optional: topic -> agency / category table (editable, no retraining)
    tfidf.json/.safetensors optional: the TF-IDF model it is ensembled with

Directories of format 1-2 kept everything in one `model.safetensors` (encoder.* and heads.*)
with the tokenizer at the top; they still load.

config.json carries `encoder` (the folder), `encoder_config` (its settings, for reading),
`max_length`, `mixing` (the weights, fitted on validation, of the routing table and the TF-IDF
model in the final probabilities) and `onnx` (the exported files, when there are any).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .artifacts import ModelDirError, head_labels
from .calibration import softmax
from .extras import MissingExtra, install_hint
from .labels import LabelSet
from .layout import ENCODER_DIR, HEADS_FILE, LEGACY_WEIGHTS, MODEL_TYPE, ROUTING, is_legacy
from .tfidf import TfidfBackend

log = logging.getLogger(__name__)

ROUTED_HEADS = ("category", "agency")


class EngineName(StrEnum):
    """What runs the network: `auto` (ONNX Runtime when the directory holds an exported file,
    else PyTorch), `onnx` or `torch`."""

    AUTO = "auto"
    ONNX = "onnx"
    TORCH = "torch"


ENGINES = tuple(EngineName)

# input ids (batch, length) and attention mask -> logits per head
Engine = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


def uses_tfidf(config: dict[str, Any]) -> bool:
    return any(m.get("tfidf_weight") for m in config.get("mixing", {}).values())


def tokenizer_dir(model_dir: Path, config: dict[str, Any]) -> Path:
    return model_dir if is_legacy(config) else model_dir / str(config["encoder"])


class TokenIds:
    """Text -> token ids with the `tokenizers` library (no transformers, no torch): the same
    ids as `AutoTokenizer` with `truncation=True, max_length=...`."""

    SETTINGS = ("tokenizer_config.json", "special_tokens_map.json")

    def __init__(
        self, tokenizer: Any, pad_id: int, max_length: int, folder: Path, unk_id: int | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.max_length = max_length
        self.folder = folder
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)

    @classmethod
    def load(cls, folder: Path, max_length: int) -> TokenIds:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            settings_path = folder / "tokenizer_config.json"
            settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        except Exception as exc:
            raise ModelDirError(f"{folder}: unreadable tokenizer files ({exc})") from exc
        pad = tokenizer.token_to_id(str(settings.get("pad_token") or "<pad>"))
        unk = tokenizer.token_to_id(str(settings.get("unk_token") or "<unk>"))
        return cls(tokenizer, int(pad if pad is not None else 0), max_length, folder, unk)

    def save(self, folder: Path) -> None:
        """tokenizer.json (without truncation: a standard file) and the settings beside it."""
        import shutil

        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.no_truncation()
        try:
            self.tokenizer.save(str(folder / "tokenizer.json"))
        finally:
            self.tokenizer.enable_truncation(self.max_length)
        for name in self.SETTINGS:
            if (self.folder / name).is_file() and self.folder != folder:
                shutil.copyfile(self.folder / name, folder / name)

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def unknown_word_share(self, texts: list[str]) -> np.ndarray | None:
        """Per text, the share of its words with a piece the vocabulary lacks (NaN: no words);
        None without an unknown token."""
        if self.unk_id is None:
            return None
        out = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            words = text.split()
            if words:
                pieces = self.tokenizer.encode_batch(words, add_special_tokens=False)
                out[i] = sum(self.unk_id in p.ids for p in pieces) / len(words)
        return out


def pad_batch(ids: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded to the longest sequence of the batch, with the attention mask."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


# What one call of the network costs beyond its rows, in padded token positions (the int8
# e5-small on 2 AVX2 cores, bench/results/serving.json: ~1.5 ms a call, 0.13-0.15 ms a
# position, so 10-16 positions): sub-batches are split where the padding they save is worth
# more than the extra call.
CALL_OVERHEAD_TOKENS = 16
# The most padded positions in one call beyond a single text: past a few hundred, a text costs
# more in a bigger call, not less (the int8 e5-small on 2 AVX2 cores, bench/results/
# serving.json: 128-token texts 21.5 ms each two to a call, 27 ms sixteen to a call, up to
# 50-88 ms under contention; 64-token texts cheapest four to a call).
MAX_CALL_TOKENS = 256
# As `overhead` and `max_tokens`: no split pays, every batch of up to `batch_size` texts runs
# as one call padded to its longest text (how the service ran before length buckets).
ONE_CALL = 1e12


def length_buckets(
    lengths: list[int],
    max_size: int,
    overhead: float = CALL_OVERHEAD_TOKENS,
    max_tokens: float = MAX_CALL_TOKENS,
) -> list[np.ndarray]:
    """Indices into `lengths`, in length order, cut into runs of at most `max_size` texts and
    (unless one text) `max_tokens` padded positions that minimise the padded positions
    computed (each run padded to its longest) plus `overhead` per run: a batch of a few long
    and many short texts no longer pads the short ones to the longest. Exact (dynamic
    programming over the sorted lengths, `max_size` cuts per text)."""
    order = np.argsort(lengths, kind="stable")
    width = [int(lengths[i]) for i in order]
    count = len(width)
    best = [0.0] + [float("inf")] * count  # best[j]: cost of the first j sorted texts
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = width[end - 1]
        for start in range(end - 1, max(0, end - max_size) - 1, -1):
            if end - start > 1 and (end - start) * longest > max_tokens:
                break
            cost = best[start] + (end - start) * longest + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs: list[np.ndarray] = []
    end = count
    while end > 0:
        runs.append(order[cut[end] : end])
        end = cut[end]
    return runs[::-1]


def batched_logits(
    engine: Engine,
    ids: list[list[int]],
    pad: int,
    batch_size: int,
    overhead: float = CALL_OVERHEAD_TOKENS,
    max_tokens: float = MAX_CALL_TOKENS,
) -> dict[str, np.ndarray]:
    """Every head's logits for tokenised texts, run in length-bucketed sub-batches of at most
    `batch_size` (`length_buckets`: each padded only to its longest text) and returned in
    input order."""
    if not ids:
        return {}
    runs = length_buckets([len(x) for x in ids], batch_size, overhead, max_tokens)
    chunks: dict[str, list[np.ndarray]] = {}
    for run in runs:
        out = engine(*pad_batch([ids[i] for i in run], pad))
        for head, logits in out.items():
            chunks.setdefault(head, []).append(np.asarray(logits, dtype=np.float32))
    inverse = np.argsort(np.concatenate(runs), kind="stable")
    return {h: np.concatenate(c)[inverse] for h, c in chunks.items()}


class RoutingTable:
    """P(label | topic) for the routed heads, learned from training data, editable as JSON."""

    def __init__(self, topics: list[str], tables: dict[str, dict[str, dict[str, float]]]):
        self.topics = topics
        self.tables = tables

    def matrix(self, head: str, labels: tuple[str, ...], topics: tuple[str, ...]) -> np.ndarray:
        """(topics, labels) row-stochastic matrix, rows in the topic head's label order.

        A topic the table does not list routes uniformly; a label the model does not know is
        refused.
        """
        index = {label: i for i, label in enumerate(labels)}
        out = np.zeros((len(topics), len(labels)))
        for row, topic in enumerate(topics):
            for label, p in self.tables[head].get(topic, {}).items():
                if label not in index:
                    raise ModelDirError(
                        f"{ROUTING}: topic {topic!r} routes to unknown {head} {label!r}"
                    )
                out[row, index[label]] = p
            total = out[row].sum()
            out[row] = out[row] / total if total > 0 else 1.0 / len(labels)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"topics": self.topics, **self.tables}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoutingTable:
        return cls(list(data["topics"]), {h: data.get(h, {}) for h in ROUTED_HEADS})


def mix(
    raw: dict[str, np.ndarray],
    routes: dict[str, np.ndarray],
    mixing: dict[str, Any],
    tfidf: dict[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """p = (1-a-b) p_encoder + a p_topic @ route + b p_tfidf, per routed head; log p out.

    `mixing` holds, per head, `routing_weight` (a), `tfidf_weight` (b) and the temperatures
    that make each component a probability first; with `prior_correction` (t) and
    `log_prior` (the training class frequencies), t * log_prior is taken off the result
    (logit adjustment: rare classes gain, for macro-F1) and it is renormalised.
    """
    out = {}
    for head in ROUTED_HEADS:
        weights = mixing.get(head, {})
        p = softmax(raw[head], weights.get("encoder_temperature", 1.0))
        a = float(weights.get("routing_weight", 0.0)) if head in routes and "topic" in raw else 0.0
        b = float(weights.get("tfidf_weight", 0.0)) if tfidf is not None else 0.0
        mixed = (1 - a - b) * p
        if a:
            p_topic = softmax(raw["topic"], weights.get("topic_temperature", 1.0))
            mixed += a * (p_topic @ routes[head])
        if b and tfidf is not None:
            mixed += b * softmax(tfidf[head], weights.get("tfidf_temperature", 1.0))
        logp = np.log(np.clip(mixed, 1e-12, None))
        tau = float(weights.get("prior_correction", 0.0))
        if tau:
            logp = logp - tau * np.asarray(weights["log_prior"], dtype=logp.dtype)
            logp = logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)
        out[head] = logp
    return out


def resolve_engine(config: dict[str, Any], engine: str) -> str:
    """`auto` is ONNX Runtime when the directory holds an exported file, else PyTorch."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "onnx" if config.get("onnx") else "torch"
    return engine


def require_engine(model_dir: Path, config: dict[str, Any], engine: str) -> None:
    """Raise `MissingExtra` when `engine` would run this directory on PyTorch and torch is not
    installed (the core install serves exported models only): checked before loading, and by
    `aduan serve` before it binds its port."""
    if config.get("model_type") != MODEL_TYPE or resolve_engine(config, engine) != "torch":
        return
    if importlib.util.find_spec("torch") is None:
        raise MissingExtra(
            f"{model_dir}: the torch engine needs torch, which is not installed: "
            f"{install_hint('torch')}; or export the model (`aduan export --model DIR`, where "
            "aduan[train] is installed) and serve it on the onnx engine"
        )


class TransformerBackend:
    """The `aduan-transformer` kind: runs the network on its engine and mixes in the routing
    table and the TF-IDF model. Saves and loads its own files."""

    model_type: ClassVar[str] = MODEL_TYPE

    def __init__(
        self,
        engine: Engine,
        tokenizer: TokenIds,
        config: dict[str, Any],
        labels: dict[str, LabelSet],
        routing: RoutingTable | None,
        tfidf: TfidfBackend | None,
        network: Any = None,
        engine_name: str = "torch",
        export: str = "",
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_length = int(config.get("max_length", 128))
        self.labels = labels
        self.mixing = config.get("mixing", {})
        self.routing = routing
        self.routes = (
            {h: routing.matrix(h, labels[h].labels, labels["topic"].labels) for h in ROUTED_HEADS}
            if routing and "topic" in labels
            else {}
        )
        self.tfidf = tfidf
        self.network = network  # the PyTorch module, when loaded (saving and export need it)
        self.engine_name = engine_name
        self.export = export  # "", "fp32" or "int8": the ONNX file `save` writes
        self.batch_size = 32
        # False: each batch runs as one call padded to its longest text (`ONE_CALL`).
        self.length_buckets = True

    def save(self, model_dir: Path) -> dict[str, Any]:
        """encoder/ (Hugging Face folder with the tokenizer), heads, routing table and TF-IDF
        part; returns the config entries."""
        from .network import save_network

        if self.network is None:
            raise ValueError("a transformer loaded without its network cannot be saved")
        encoder_config = save_network(self.network, model_dir / ENCODER_DIR, model_dir / HEADS_FILE)
        self.tokenizer.save(model_dir / ENCODER_DIR)
        if self.routing is not None:
            (model_dir / ROUTING).write_text(
                json.dumps(self.routing.to_json(), ensure_ascii=False, indent=1)
            )
        if self.tfidf is not None:
            self.tfidf.save(model_dir)
        entries: dict[str, Any] = {
            "encoder": ENCODER_DIR,
            "encoder_config": encoder_config,
            "max_length": self.max_length,
            "pooling": "mean",
            "mixing": self.mixing,
            "heads": {h: ls.to_json() for h, ls in self.labels.items()},
        }
        if self.export:
            from .onnx import export_network

            entries["onnx"] = export_network(self.network, model_dir, self.export)
        return entries

    @classmethod
    def required_files(cls, config: dict[str, Any]) -> tuple[str, ...]:
        if is_legacy(config):
            files: tuple[str, ...] = (LEGACY_WEIGHTS, "tokenizer.json")
        else:
            folder = str(config.get("encoder"))
            files = (f"{folder}/config.json", f"{folder}/tokenizer.json", HEADS_FILE)
        if uses_tfidf(config):
            files += TfidfBackend.required_files(config)
        return files

    @classmethod
    def load(
        cls,
        model_dir: Path,
        config: dict[str, Any],
        engine: str = "auto",
        threads: int = 0,
        **options: Any,
    ) -> TransformerBackend:
        """Load the directory on `engine` (`auto`, `torch` or `onnx`) with `threads` (0: all
        cores)."""
        labels = head_labels(config)
        if "encoder" not in config:
            raise ModelDirError(f"{model_dir}/config.json: no encoder configuration")
        tokenizer = TokenIds.load(
            tokenizer_dir(model_dir, config), int(config.get("max_length", 128))
        )
        name = resolve_engine(config, engine)
        network = None
        run: Engine
        if name == "onnx":
            from .onnx import OnnxEngine

            run = OnnxEngine.load(model_dir, config, threads)
        else:
            require_engine(model_dir, config, name)
            from .network import TorchEngine, load_network

            network = load_network(model_dir, config, labels)
            run = TorchEngine(network, threads)
        routing = None
        if (model_dir / ROUTING).is_file():
            routing = RoutingTable.from_json(json.loads((model_dir / ROUTING).read_text()))
        tfidf = TfidfBackend.load(model_dir, config) if uses_tfidf(config) else None
        return cls(run, tokenizer, config, labels, routing, tfidf, network, name)

    def encoder_logits(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Raw head outputs of the network: tokenised once, batched in length order."""
        return batched_logits(
            self.engine,
            self.tokenizer(texts),
            self.tokenizer.pad_id,
            self.batch_size,
            *(() if self.length_buckets else (ONE_CALL, ONE_CALL)),
        )

    def unknown_word_share(self, texts: list[str]) -> np.ndarray | None:
        """Per text, the share of words the model cannot read: out of the TF-IDF part's
        vocabulary when there is one, else words with an unknown piece in the tokenizer."""
        if self.tfidf is not None:
            return self.tfidf.unknown_word_share(texts)
        return self.tokenizer.unknown_word_share(texts)

    def logits(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Log-probabilities after mixing in the routing table and the TF-IDF model."""
        raw = self.encoder_logits(texts)
        return mix(
            raw,
            self.routes,
            self.mixing,
            self.tfidf.logits(texts) if self.tfidf is not None else None,
        )
