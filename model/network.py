"""The transformer model kind: a shared encoder with one linear head per task.

A model directory of this kind holds, beside the common contract (see `artifacts.py`):

    model.safetensors      encoder.* (a BERT-style encoder) and heads.<name>.* weights
    tokenizer.json (+ tokenizer_config.json, special_tokens_map.json)
    routing.json           optional: topic -> agency / category table (editable, no retraining)
    tfidf.json/.safetensors optional: the TF-IDF model it is ensembled with

config.json carries `encoder` (the encoder's own config), `max_length`, and `mixing`: the
weights, fitted on validation, of the routing table and of the TF-IDF model in the final
probabilities.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .artifacts import ModelDirError, head_labels
from .calibration import softmax
from .labels import LabelSet
from .tfidf import TfidfBackend

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"  # encoder.* and heads.<name>.* tensors
ROUTING = "routing.json"
ROUTED_HEADS = ("category", "agency")


def _uses_tfidf(config: dict[str, Any]) -> bool:
    return any(m.get("tfidf_weight") for m in config.get("mixing", {}).values())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states under the attention mask (how e5 was trained)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class MultiHeadClassifier(nn.Module):
    """Encoder + mean pooling + dropout + one linear layer per head."""

    def __init__(
        self, encoder: nn.Module, hidden: int, head_sizes: dict[str, int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in head_sizes.items()})

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        return {name: head(pooled) for name, head in self.heads.items()}


def build_encoder(encoder_config: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**encoder_config)
    kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
    return AutoModel.from_config(config, **kwargs)


def collate(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and their attention mask."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return input_ids, mask


@torch.inference_mode()
def head_outputs(
    model: MultiHeadClassifier, ids: list[list[int]], pad: int, batch_size: int
) -> dict[str, np.ndarray]:
    """Every head's logits for tokenised texts, run in length order (little padding) and
    returned in input order."""
    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    chunks: dict[str, list[np.ndarray]] = {h: [] for h in model.heads}
    for start in range(0, len(ids), batch_size):
        out = model(*collate([list(ids[i]) for i in order[start : start + batch_size]], pad))
        for head, logits in out.items():
            chunks[head].append(logits.float().numpy())
    inverse = np.argsort(order, kind="stable")
    return {h: np.concatenate(c)[inverse] for h, c in chunks.items() if c}


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


class TransformerBackend:
    """The `aduan-transformer` kind: encoder + heads, mixed with the routing table and the
    TF-IDF model into per-head log-probabilities. Saves and loads its own files."""

    model_type: ClassVar[str] = "aduan-transformer"

    def __init__(
        self,
        model: MultiHeadClassifier,
        tokenizer: Any,
        config: dict[str, Any],
        labels: dict[str, LabelSet],
        routing: RoutingTable | None,
        tfidf: TfidfBackend | None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = int(config.get("max_length", 128))
        self.encoder_config: dict[str, Any] = dict(config.get("encoder") or {})
        self.labels = labels
        self.mixing = config.get("mixing", {})
        self.routing = routing
        self.routes = (
            {h: routing.matrix(h, labels[h].labels, labels["topic"].labels) for h in ROUTED_HEADS}
            if routing and "topic" in labels
            else {}
        )
        self.tfidf = tfidf
        self.batch_size = 32

    def save(self, model_dir: Path) -> dict[str, Any]:
        """Weights, tokenizer, routing table and TF-IDF part; returns the config entries."""
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(model_dir / WEIGHTS), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(str(model_dir))
        if self.routing is not None:
            (model_dir / ROUTING).write_text(
                json.dumps(self.routing.to_json(), ensure_ascii=False, indent=1)
            )
        if self.tfidf is not None:
            self.tfidf.save(model_dir)
        return {
            "encoder": self.encoder_config,
            "max_length": self.max_length,
            "pooling": "mean",
            "mixing": self.mixing,
            "heads": {h: ls.to_json() for h, ls in self.labels.items()},
        }

    @classmethod
    def required_files(cls, config: dict[str, Any]) -> tuple[str, ...]:
        files: tuple[str, ...] = (WEIGHTS, "tokenizer.json")
        if _uses_tfidf(config):
            files += TfidfBackend.required_files(config)
        return files

    @classmethod
    def load(cls, model_dir: Path, config: dict[str, Any]) -> TransformerBackend:
        from safetensors.torch import load_file
        from transformers import PreTrainedTokenizerFast

        labels = head_labels(config)
        if "encoder" not in config:
            raise ModelDirError(f"{model_dir}/config.json: no encoder configuration")
        try:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
        except Exception as exc:
            raise ModelDirError(f"{model_dir}: unreadable tokenizer files ({exc})") from exc
        model = MultiHeadClassifier(
            build_encoder(config["encoder"]),
            int(config["encoder"]["hidden_size"]),
            {h: len(ls) for h, ls in labels.items()},
        )
        path = model_dir / WEIGHTS
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception as exc:  # truncated file, wrong shapes, missing tensors
            raise ModelDirError(f"{path}: unreadable or corrupt weights ({exc})") from exc
        routing = None
        if (model_dir / ROUTING).is_file():
            routing = RoutingTable.from_json(json.loads((model_dir / ROUTING).read_text()))
        tfidf = TfidfBackend.load(model_dir, config) if _uses_tfidf(config) else None
        return cls(model, tokenizer, config, labels, routing, tfidf)

    def encoder_logits(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Raw head outputs of the network, batched in length order."""
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return head_outputs(self.model, ids, int(pad), self.batch_size)

    def unknown_word_share(self, texts: list[str]) -> np.ndarray | None:
        """Per text, the share of words the model cannot read: out of the TF-IDF part's
        vocabulary when there is one, else words with an unknown piece in the tokenizer."""
        if self.tfidf is not None:
            return self.tfidf.unknown_word_share(texts)
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return None
        out = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            words = text.split()
            if words:
                pieces = self.tokenizer(words, add_special_tokens=False)["input_ids"]
                out[i] = sum(unk in ids for ids in pieces) / len(words)
        return out

    def logits(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Log-probabilities after mixing in the routing table and the TF-IDF model."""
        raw = self.encoder_logits(texts)
        return mix(
            raw,
            self.routes,
            self.mixing,
            self.tfidf.logits(texts) if self.tfidf is not None else None,
        )


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
