"""Fine-tuning the transformer model kind: shared encoder, heads for category, agency, topic.

A standard PyTorch loop: AdamW with a higher learning rate for the fresh heads than for the
pretrained encoder, linear warm-up and decay, bf16 autocast on the CPU, length-bucketed
batches, class-weighted cross-entropy, early stopping on validation agency macro-F1, a
checkpoint after every epoch (a rerun resumes from it) and fixed seeds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score
from torch import nn
from tqdm import tqdm

from aduan.model.labels import LabelSet
from aduan.model.network import (
    MultiHeadClassifier,
    RoutingTable,
    TransformerBackend,
    collate,
    head_outputs,
    mix,
)
from aduan.model.tfidf import TfidfBackend

from .batches import bucketed_batches
from .config import TrainConfig
from .data import Splits, load_splits
from .metrics import fit_temperature

log = logging.getLogger(__name__)

NO_TOPIC = "(tanpa topik)"
OTHER_TOPIC = "(topik lain)"
TOPIC_LOSS_WEIGHT = 0.5
# Logit-adjustment strengths measured in the ablation (metrics.json -> validation_variants).
PRIOR_CORRECTIONS = (0.25, 0.5, 1.0)


def topic_labels(splits: Splits, min_rows: int) -> tuple[pd.Series, pd.Series, LabelSet]:
    """Topics with at least `min_rows` training rows; the rest pooled, empty ones marked."""
    counts = splits.train["topic"].value_counts()
    frequent = {t for t, n in counts.items() if n >= min_rows and t}

    def fold(topic: str) -> str:
        return NO_TOPIC if not topic else topic if topic in frequent else OTHER_TOPIC

    train, valid = splits.train["topic"].map(fold), splits.valid["topic"].map(fold)
    return train, valid, LabelSet.from_values(pd.concat([train, valid]))


def routing_table(topics: pd.Series, frame: pd.DataFrame) -> RoutingTable:
    tables: dict[str, dict[str, dict[str, float]]] = {}
    for head in ("category", "agency"):
        counts = pd.crosstab(topics, frame[head])
        tables[head] = {
            str(topic): {
                str(label): round(float(n) / row.sum(), 6) for label, n in row.items() if n > 0
            }
            for topic, row in counts.iterrows()
        }
    return RoutingTable(sorted(tables["agency"]), tables)


def head_targets(
    splits: Splits, labels: dict[str, LabelSet], topics: tuple[pd.Series, pd.Series] | None
) -> dict[str, dict[str, np.ndarray]]:
    """Label ids per part ("train", "valid") and head; -1 where a label is unknown."""
    targets: dict[str, dict[str, np.ndarray]] = {"train": {}, "valid": {}}
    for i, (part, frame) in enumerate((("train", splits.train), ("valid", splits.valid))):
        columns = {h: frame[h] for h in ("category", "agency")}
        if topics is not None and "topic" in labels:
            columns["topic"] = topics[i]
        for head, values in columns.items():
            index = labels[head].label2id
            targets[part][head] = np.array([index.get(v, -1) for v in values])
    return targets


def class_weights(y: np.ndarray, classes: int, power: float) -> torch.Tensor:
    counts = np.bincount(y[y >= 0], minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    weights *= (counts > 0).sum() / max(weights.sum(), 1e-9)
    return torch.tensor(weights, dtype=torch.float32)


def resolve_base(config: TrainConfig) -> str:
    """The base encoder: `--base` as given, else the cached default (built when missing,
    then domain-adapted when `adapt_steps` asks for it)."""
    if config.base:
        return config.base
    from .bases.build import adapted_base, default_base
    from .bases.pretrain import MlmConfig

    base = default_base(Path(config.base_cache), config.data)
    if config.adapt_steps:
        adaptation = MlmConfig(
            max_steps=config.adapt_steps,
            lr=config.adapt_lr,
            head_warmup_steps=round(config.adapt_steps * config.adapt_head_warmup),
        )
        base = adapted_base(base, config.data, config.train_until, adaptation)
    return str(base)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _config_hash(config: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class _Trainer:
    def __init__(self, config: TrainConfig, splits: Splits, checkpoint_dir: Path) -> None:
        from transformers import AutoModel, PreTrainedTokenizerFast

        self.config = config
        self.checkpoint_dir = checkpoint_dir
        base = resolve_base(config)
        log.info("base encoder: %s", base)
        self.base = base
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(base)
        encoder = AutoModel.from_pretrained(base)
        if hasattr(encoder, "pooler"):
            encoder.pooler = None  # e5 has no pooler: mean pooling instead
        self.encoder_config = encoder.config.to_diff_dict()
        self.encoder_config.pop("_name_or_path", None)
        self.encoder_config.pop("transformers_version", None)
        self.encoder_config["model_type"] = encoder.config.model_type
        self.labels = dict(splits.labels)
        self.topics: tuple[pd.Series, pd.Series] | None = None
        if config.topic_head:
            train_topics, valid_topics, topic_set = topic_labels(splits, config.min_topic_rows)
            self.labels["topic"] = topic_set
            self.topics = (train_topics, valid_topics)
        self.targets = head_targets(splits, self.labels, self.topics)
        self.model = MultiHeadClassifier(
            encoder,
            int(encoder.config.hidden_size),
            {h: len(ls) for h, ls in self.labels.items()},
            config.dropout,
        )
        self.pad = int(
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        )
        self.ids = {
            part: self._encode(frame["text"].tolist())
            for part, frame in (("train", splits.train), ("valid", splits.valid))
        }

    def _encode(self, texts: list[str]) -> list[list[int]]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)
        return [list(x) for x in enc["input_ids"]]

    def _autocast(self) -> Any:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.bf16)

    def predict_raw(self, part: str) -> dict[str, np.ndarray]:
        with self._autocast():
            return head_outputs(self.model, self.ids[part], self.pad, 64)

    def _score(self) -> float:
        logits = self.predict_raw("valid")
        y = self.targets["valid"]["agency"]
        pred = logits["agency"].argmax(1)
        return float(f1_score(y, pred, average="macro", labels=sorted(set(y) | set(pred))))

    def train(self) -> None:
        config = self.config
        _seed(config.seed)
        head_params = [p for n, p in self.model.named_parameters() if not n.startswith("encoder")]
        enc_params = [p for n, p in self.model.named_parameters() if n.startswith("encoder")]
        optimizer = torch.optim.AdamW(
            [
                {"params": enc_params, "lr": config.lr_encoder},
                {"params": head_params, "lr": config.lr_head},
            ],
            weight_decay=config.weight_decay,
        )
        steps_per_epoch = (len(self.ids["train"]) + config.batch_size - 1) // config.batch_size
        total = steps_per_epoch * config.epochs
        if config.max_steps:
            total = min(total, config.max_steps)
        from transformers import get_linear_schedule_with_warmup

        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(config.warmup_ratio * total), max(total, 1)
        )
        losses = {
            h: nn.CrossEntropyLoss(
                weight=class_weights(
                    self.targets["train"][h], len(self.labels[h]), config.class_weight_power
                ),
                ignore_index=-1,
            )
            for h in self.labels
        }
        start_epoch, best, best_state, stale, step = self._resume(optimizer, scheduler)
        lengths = [len(x) for x in self.ids["train"]]
        for epoch in range(start_epoch, config.epochs):
            self.model.train()
            batches = bucketed_batches(
                lengths, config.batch_size, random.Random(config.seed + epoch)
            )
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
            started = time.perf_counter()
            for batch in bar:
                input_ids, mask = collate([self.ids["train"][i] for i in batch], self.pad)
                with self._autocast():
                    out = self.model(input_ids, mask)
                loss = sum(
                    (TOPIC_LOSS_WEIGHT if h == "topic" else 1.0)
                    * losses[h](out[h].float(), torch.from_numpy(self.targets["train"][h][batch]))
                    for h in out
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if config.max_steps and step >= config.max_steps:
                    break
            score = self._score()
            log.info(
                "epoch %d: validation agency macro-F1 %.4f (%.0f s)",
                epoch + 1,
                score,
                time.perf_counter() - started,
            )
            if score > best:
                best, best_state, stale = score, copy.deepcopy(self.model.state_dict()), 0
            else:
                stale += 1
            self._checkpoint(epoch + 1, best, best_state, stale, step, optimizer, scheduler)
            if stale >= config.patience or (config.max_steps and step >= config.max_steps):
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)

    def _checkpoint(
        self,
        epoch: int,
        best: float,
        best_state: Any,
        stale: int,
        step: int,
        optimizer: Any,
        scheduler: Any,
    ) -> None:
        path = self.checkpoint_dir
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.model.state_dict().items()},
            str(path / "last.safetensors"),
        )
        if best_state is not None:
            save_file(
                {k: v.contiguous() for k, v in best_state.items()}, str(path / "best.safetensors")
            )
        # Optimiser state is only ever read back by this code, never shipped in a model.
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            path / "optimizer.pt",
        )
        (path / "state.json").write_text(
            json.dumps(
                {
                    "config": _config_hash(self.config),
                    "epoch": epoch,
                    "best": best,
                    "stale": stale,
                    "step": step,
                }
            )
        )

    def _resume(self, optimizer: Any, scheduler: Any) -> tuple[int, float, Any, int, int]:
        state_file = self.checkpoint_dir / "state.json"
        if not state_file.is_file():
            return 0, -1.0, None, 0, 0
        state = json.loads(state_file.read_text())
        if state.get("config") != _config_hash(self.config):
            log.info("checkpoint in %s is for other settings; starting afresh", self.checkpoint_dir)
            return 0, -1.0, None, 0, 0
        self.model.load_state_dict(load_file(str(self.checkpoint_dir / "last.safetensors")))
        extra = torch.load(self.checkpoint_dir / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        best_path = self.checkpoint_dir / "best.safetensors"
        best_state = load_file(str(best_path)) if best_path.is_file() else None
        log.info("resuming from epoch %d of %s", state["epoch"], self.checkpoint_dir)
        return state["epoch"], state["best"], best_state, state["stale"], state["step"]


def log_priors(
    train_targets: dict[str, np.ndarray], labels: dict[str, LabelSet]
) -> dict[str, list[float]]:
    """log of each routed head's training class frequencies (add-one smoothed)."""
    out = {}
    for head in ("category", "agency"):
        y = train_targets[head]
        counts = np.bincount(y[y >= 0], minlength=len(labels[head])) + 1.0
        out[head] = np.log(counts / counts.sum()).round(6).tolist()
    return out


def _fit_mixing(
    raw: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    routes: dict[str, np.ndarray],
    tfidf: dict[str, np.ndarray] | None,
    priors: dict[str, list[float]] | None = None,
    prior_correction: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Temperatures of each component, then mixing weights by validation log-likelihood;
    the prior correction (a fixed setting, not fitted) is recorded with its priors."""
    mixing: dict[str, dict[str, Any]] = {}
    grid = [round(x * 0.1, 1) for x in range(10)]
    for head in ("category", "agency"):
        y = targets[head]
        weights = {"encoder_temperature": fit_temperature(raw[head], y)}
        if "topic" in raw:
            weights["topic_temperature"] = fit_temperature(raw["topic"], targets["topic"])
        if tfidf is not None:
            weights["tfidf_temperature"] = fit_temperature(tfidf[head], y)
        best = (np.inf, 0.0, 0.0)
        known = y >= 0
        for a in grid if routes else [0.0]:
            for b in grid if tfidf is not None else [0.0]:
                if a + b > 0.9:
                    continue
                trial = {head: {**weights, "routing_weight": a, "tfidf_weight": b}}
                logp = mix(raw, routes, trial, tfidf)[head]
                nll = -float(logp[known, y[known]].mean())
                if nll < best[0]:
                    best = (nll, a, b)
        weights["routing_weight"], weights["tfidf_weight"] = best[1], best[2]
        mixing[head] = dict(weights)
        if prior_correction and priors:
            mixing[head].update(prior_correction=prior_correction, log_prior=priors[head])
        log.info("%s mixing: routing %.1f, tf-idf %.1f", head, best[1], best[2])
    return mixing


def _ablation(
    raw: dict[str, np.ndarray],
    splits: Splits,
    labels: dict[str, LabelSet],
    targets: dict[str, dict[str, np.ndarray]],
    routes: dict[str, np.ndarray],
    tfidf: dict[str, np.ndarray] | None,
    config: TrainConfig,
) -> dict[str, dict[str, Any]]:
    """Validation figures of each component and combination, on the same rows.

    Each variant gets its own temperature and auto-route threshold, fitted on validation like
    the shipped model's, so the rows of bench/quality.md compare like with like.
    """
    from .metrics import calibrate_head, summary

    def figures(logits: dict[str, np.ndarray]) -> dict[str, Any]:
        return {
            head: summary(
                calibrate_head(
                    logits[head],
                    splits.valid[head].tolist(),
                    labels[head].labels,
                    config.route_accuracy,
                ).metrics
            )
            for head in ("category", "agency")
        }

    variants: dict[str, tuple[dict, dict, Any, float]] = {
        "encoder": (raw, {}, None, 0.0),
        "encoder + routing table": (raw, routes, None, 0.0),
        "encoder + tf-idf": (raw, {}, tfidf, 0.0),
        "encoder + routing table + tf-idf": (raw, routes, tfidf, 0.0),
    }
    for tau in PRIOR_CORRECTIONS:
        variants[f"encoder + routing table + tf-idf, prior correction {tau}"] = (
            raw,
            routes,
            tfidf,
            tau,
        )
    out: dict[str, dict[str, Any]] = {}
    if tfidf is not None:  # the baseline on the same rows, for the model card
        out["tf-idf alone (baseline)"] = figures(tfidf)
    priors = log_priors(targets["train"], labels)
    for name, (logits, variant_routes, variant_tfidf, tau) in variants.items():
        if (name.count("routing") and not routes) or (name.count("tf-idf") and tfidf is None):
            continue
        weights = _fit_mixing(logits, targets["valid"], variant_routes, variant_tfidf, priors, tau)
        out[name] = figures(mix(logits, variant_routes, weights, variant_tfidf))
    return out


def fit_transformer(
    config: TrainConfig, splits: Splits, checkpoint_dir: Path
) -> tuple[TransformerBackend, dict[str, Any]]:
    """Fine-tune, fit the routing table and the mixing weights; the fitted kind (saved by the
    caller) and what training adds to config.json and metrics.json."""
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    trainer = _Trainer(config, splits, checkpoint_dir)
    trainer.train()
    raw = trainer.predict_raw("valid")
    routing = None
    routes: dict[str, np.ndarray] = {}
    if trainer.topics is not None:
        routing = routing_table(trainer.topics[0], splits.train)
        topics = trainer.labels["topic"].labels
        routes = {
            h: routing.matrix(h, trainer.labels[h].labels, topics) for h in ("category", "agency")
        }
    tfidf_backend = tfidf_logits = None
    if config.ensemble_tfidf:
        from .baseline import fit_baseline

        tfidf_backend = TfidfBackend(fit_baseline(splits.train, config), trainer.labels)
        tfidf_logits = tfidf_backend.logits(splits.valid["text"].tolist())
    mixing = _fit_mixing(
        raw,
        trainer.targets["valid"],
        routes,
        tfidf_logits,
        log_priors(trainer.targets["train"], trainer.labels),
        config.prior_correction,
    )
    variants = _ablation(raw, splits, trainer.labels, trainer.targets, routes, tfidf_logits, config)
    backend = TransformerBackend(
        trainer.model,
        trainer.tokenizer,
        {"max_length": config.max_length, "mixing": mixing, "encoder": trainer.encoder_config},
        trainer.labels,
        routing,
        tfidf_backend,
    )
    return backend, {"base_encoder": trainer.base, "validation_variants": variants}


def ablate_model_dir(model_dir: Path) -> dict[str, dict[str, Any]]:
    """The ablation of a trained transformer directory, recomputed on its own split with the
    current code and no retraining (for variants added after it was trained). The network runs
    in fp32 here, in bf16 during training: figures may differ in the third decimal."""
    from aduan.model.artifacts import TRAINING_CONFIG, read_config
    from aduan.model.tfidf import TfidfHeads

    config = TrainConfig(**json.loads((model_dir / TRAINING_CONFIG).read_text()))
    model_config = read_config(model_dir)
    if model_config.get("model_type") != TransformerBackend.model_type:
        raise ValueError(f"{model_dir}: not a transformer model directory")
    splits, _ = load_splits(config)
    backend = TransformerBackend.load(model_dir, model_config)
    labels = backend.labels
    topics = None
    if "topic" in labels:
        train_topics, valid_topics, _ = topic_labels(splits, config.min_topic_rows)
        topics = (train_topics, valid_topics)
    texts = splits.valid["text"].tolist()
    raw = backend.encoder_logits(texts)
    routes = backend.routes
    tfidf = None
    if config.ensemble_tfidf:
        tfidf = TfidfBackend(TfidfHeads.load(model_dir), labels).logits(texts)
    return _ablation(
        raw, splits, labels, head_targets(splits, labels, topics), routes, tfidf, config
    )
