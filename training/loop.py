"""The fine-tuning loop of the transformer kind: shared encoder, heads for category, agency and
topic, trained with PyTorch.

AdamW with a higher learning rate for the fresh heads than for the encoder, linear warm-up and
decay, bf16 autocast where the CPU runs it natively, length-bucketed batches, class-weighted
cross-entropy, early stopping on validation agency macro-F1, a checkpoint after every epoch (a
rerun resumes from it) and fixed seeds.

Under `torchrun` the same loop runs data-parallel (`distributed.py`): each process trains on its
share of every epoch's batches, gradients are averaged over the processes after each backward
pass, and rank 0 alone writes checkpoints. It runs on CUDA when there is a GPU.

What makes it fit a 2-core CPU: `encoder_layers` keeps only the lower layers of the base
(pruning), and `frozen_layers` freezes the embeddings and the lowest layers, whose outputs are
computed once per text (`LowerCache`, shared by the selection run and the refit), so an epoch
costs only the upper layers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score
from torch import nn

from aduan.model.labels import LabelSet
from aduan.model.network import MultiHeadClassifier, load_encoder
from aduan.model.progress import progress
from aduan.model.transformer import TokenIds

from . import distributed
from .batches import bucketed_batches
from .config import TrainConfig
from .data import Splits
from .mixing import head_targets, topic_labels

log = logging.getLogger(__name__)

TOPIC_LOSS_WEIGHT = 0.5

# An extra loss term for one batch: the heads' logits and the batch's rows in the training texts.
BatchLoss = Callable[[dict[str, torch.Tensor], list[int]], torch.Tensor]
# Called once per fine-tuning run with its training texts and label sets; returns the batch
# term. The hook an experiment adds a loss with (distillation: `experiments/distillation.py`).
LossHook = Callable[[list[str], dict[str, LabelSet]], BatchLoss]


def class_weights(y: np.ndarray, classes: int, power: float) -> torch.Tensor:
    counts = np.bincount(y[y >= 0], minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    weights *= (counts > 0).sum() / max(weights.sum(), 1e-9)
    return torch.tensor(weights, dtype=torch.float32)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _config_hash(config: TrainConfig, phase: str) -> str:
    payload = json.dumps([config.to_dict(), phase], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


@dataclass
class LowerCache:
    """Outputs of the frozen lower layers, per text (bf16), computed once and shared by the
    selection run and the refit."""

    layers: int
    bf16: bool = True  # compute in bf16 autocast (stored in bf16 either way)
    states: dict[str, torch.Tensor] = field(default_factory=dict)

    @torch.inference_mode()
    def fill(self, model: MultiHeadClassifier, tokenizer: TokenIds, texts: list[str]) -> None:
        missing = sorted({t for t in texts if t not in self.states})
        if not missing:
            return
        model.eval()
        device = next(model.parameters()).device
        ids = tokenizer(missing)
        order = np.argsort([len(x) for x in ids], kind="stable")
        steps = progress(
            range(0, len(ids), 64),
            desc="lower layers (once)",
            unit="batch",
            disable=not distributed.is_main(),
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for start in steps:
                rows = order[start : start + 64]
                batch = [ids[i] for i in rows]
                input_ids, mask = _pad(batch, tokenizer.pad_id)
                hidden = model.lower(input_ids.to(device), mask.to(device), self.layers)
                hidden = hidden.to(torch.bfloat16).cpu()
                for k, i in enumerate(rows):
                    self.states[missing[i]] = hidden[k, : len(ids[i])].clone()

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached states of `texts`, padded with zeros, and their attention mask (on the CPU)."""
        states = [self.states[t] for t in texts]
        width = max(len(s) for s in states)
        hidden = torch.zeros((len(states), width, states[0].shape[-1]), dtype=torch.float32)
        mask = torch.zeros((len(states), width), dtype=torch.long)
        for row, s in enumerate(states):
            hidden[row, : len(s)] = s.float()
            mask[row, : len(s)] = 1
        return hidden, mask


def _pad(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    from aduan.model.transformer import pad_batch

    input_ids, mask = pad_batch(ids, pad)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


class FineTuning:
    """One training run of the network on `splits.train`, scored on `splits.valid` after
    every epoch unless `fixed_epochs` is given (the refit); `extra_loss` adds an
    experiment's term to the loss."""

    def __init__(
        self,
        config: TrainConfig,
        splits: Splits,
        checkpoint_dir: Path,
        base: str,
        tokenizer: TokenIds,
        cache: LowerCache | None,
        fixed_epochs: int = 0,
        extra_loss: LossHook | None = None,
    ) -> None:
        self.config = config
        settings = self.settings = config.transformer
        self.checkpoint_dir = checkpoint_dir
        self.fixed_epochs = fixed_epochs
        self.extra_loss = extra_loss
        self.epochs = fixed_epochs or settings.epochs
        self.base = base
        self.tokenizer = tokenizer
        self.cache = cache
        encoder = load_encoder(base)
        if settings.encoder_layers:  # prune: keep the lowest layers only
            encoder.encoder.layer = encoder.encoder.layer[: settings.encoder_layers]
            encoder.config.num_hidden_layers = len(encoder.encoder.layer)
        self.labels = dict(splits.labels)
        self.topics: tuple[pd.Series, pd.Series] | None = None
        if settings.topic_head:
            train_topics, valid_topics, topic_set = topic_labels(splits, settings.min_topic_rows)
            self.labels["topic"] = topic_set
            self.topics = (train_topics, valid_topics)
        self.targets = head_targets(splits, self.labels, self.topics)
        _seed(config.seed)
        self.model = MultiHeadClassifier(
            encoder,
            int(encoder.config.hidden_size),
            {h: len(ls) for h, ls in self.labels.items()},
            settings.dropout,
        )
        self.device = distributed.device(config.device)
        self.bf16 = distributed.use_bf16(settings.bf16, self.device)
        self.model.to(self.device)
        distributed.broadcast_module(self.model)  # every process starts from rank 0's weights
        self.texts = {
            "train": splits.train["text"].tolist(),
            "valid": splits.valid["text"].tolist(),
        }
        if cache is not None:
            self._freeze(cache.layers)
            cache.bf16 = self.bf16
            cache.fill(self.model, tokenizer, [*self.texts["train"], *self.texts["valid"]])
            self.ids = {}
        else:
            self.ids = {part: tokenizer(texts) for part, texts in self.texts.items()}
        self.extra_term = extra_loss(self.texts["train"], self.labels) if extra_loss else None

    def _freeze(self, layers: int) -> None:
        frozen = [self.model.encoder.embeddings, *self.model.layers[:layers]]
        for module in frozen:
            for param in module.parameters():
                param.requires_grad_(False)

    def _lengths(self, part: str) -> list[int]:
        if self.cache is not None:
            return [len(self.cache.states[t]) for t in self.texts[part]]
        return [len(x) for x in self.ids[part]]

    def _forward(self, part: str, rows: list[int]) -> dict[str, torch.Tensor]:
        if self.cache is not None:
            hidden, mask = self.cache.batch([self.texts[part][i] for i in rows])
            return self.model.upper(hidden.to(self.device), mask.to(self.device), self.cache.layers)
        ids, mask = _pad([self.ids[part][i] for i in rows], self.tokenizer.pad_id)
        return self.model(ids.to(self.device), mask.to(self.device))

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _loss(
        self, out: dict[str, torch.Tensor], batch: list[int], losses: dict[str, nn.Module]
    ) -> torch.Tensor:
        """Cross-entropy per head (the topic head weighted down), plus the extra term."""
        total = torch.zeros((), device=self.device)
        for head, logits in out.items():
            target = torch.from_numpy(self.targets["train"][head][batch]).to(self.device)
            weight = TOPIC_LOSS_WEIGHT if head == "topic" else 1.0
            total = total + weight * losses[head](logits.float(), target)
        if self.extra_term is not None:
            total = total + self.extra_term(out, batch)
        return total

    @torch.inference_mode()
    def predict_raw(self, part: str) -> dict[str, np.ndarray]:
        self.model.eval()
        order = np.argsort(self._lengths(part), kind="stable")
        chunks: dict[str, list[np.ndarray]] = {}
        with self._autocast():
            for start in range(0, len(order), 64):
                out = self._forward(part, [int(i) for i in order[start : start + 64]])
                for head, logits in out.items():
                    chunks.setdefault(head, []).append(logits.float().cpu().numpy())
        inverse = np.argsort(order, kind="stable")
        return {h: np.concatenate(c)[inverse] for h, c in chunks.items()}

    def _score(self) -> float:
        logits = self.predict_raw("valid")
        y = self.targets["valid"]["agency"]
        pred = logits["agency"].argmax(1)
        return float(f1_score(y, pred, average="macro", labels=sorted(set(y) | set(pred))))

    def train(self) -> int:
        """Train; returns the epoch count of the kept weights (the best scored epoch, or
        `fixed_epochs`)."""
        config, settings = self.config, self.settings
        _seed(config.seed + distributed.rank())  # dropout differs per process, weights do not
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for n, p in trainable if n.startswith("encoder")]},
                {"params": [p for n, p in trainable if not n.startswith("encoder")]},
            ],
            weight_decay=settings.weight_decay,
        )
        optimizer.param_groups[0]["lr"] = settings.lr_encoder
        optimizer.param_groups[1]["lr"] = settings.lr_head
        batches_per_epoch = (
            len(self.texts["train"]) + settings.batch_size - 1
        ) // settings.batch_size
        # Under torchrun each process takes its share of the batches: fewer steps per epoch,
        # each on world_size x batch_size texts.
        steps_per_epoch = -(-batches_per_epoch // distributed.world_size())
        total = steps_per_epoch * self.epochs
        if settings.max_steps:
            total = min(total, settings.max_steps)
        from transformers import get_linear_schedule_with_warmup

        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(settings.warmup_ratio * total), max(total, 1)
        )
        losses: dict[str, nn.Module] = {
            h: nn.CrossEntropyLoss(
                weight=class_weights(
                    self.targets["train"][h], len(self.labels[h]), settings.class_weight_power
                ).to(self.device),
                ignore_index=-1,
            )
            for h in self.labels
        }
        start_epoch, best, best_epoch, best_state, stale, step = self._resume(optimizer, scheduler)
        distributed.agree(start_epoch, "the epoch to resume from", self.device)
        lengths = self._lengths("train")
        params = [p for _, p in trainable]
        epoch = start_epoch
        for epoch in range(start_epoch, self.epochs):
            self.model.train()
            batches = distributed.shard(
                bucketed_batches(lengths, settings.batch_size, random.Random(config.seed + epoch))
            )
            bar = progress(
                batches,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                unit="batch",
                disable=not distributed.is_main(),
            )
            started = time.perf_counter()
            for batch in bar:
                with self._autocast():
                    out = self._forward("train", batch)
                loss = self._loss(out, batch, losses)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(params)
                nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if settings.max_steps and step >= settings.max_steps:
                    break
            seconds = time.perf_counter() - started
            if self.fixed_epochs:
                score = float(epoch + 1)  # no validation: the last epoch is kept
                log.info("refit epoch %d done (%.0f s)", epoch + 1, seconds)
            else:
                score = self._score()
                log.info(
                    "epoch %d: validation agency macro-F1 %.4f (%.0f s)", epoch + 1, score, seconds
                )
            if score > best:
                best, best_state, stale = score, copy.deepcopy(self.model.state_dict()), 0
                best_epoch = epoch + 1
            else:
                stale += 1
            self._checkpoint(
                epoch + 1, best, best_epoch, best_state, stale, step, optimizer, scheduler
            )
            if (not self.fixed_epochs and stale >= settings.patience) or (
                settings.max_steps and step >= settings.max_steps
            ):
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.to("cpu")  # saved, exported and served from the CPU
        return max(best_epoch, 1)

    def _hash(self) -> str:
        # A checkpoint resumes only the run it was written by: same settings, same phase,
        # same extra loss term.
        phase = f"fixed-{self.fixed_epochs}" + (f" {self.extra_loss!r}" if self.extra_loss else "")
        return _config_hash(self.config, phase)

    def _state(self) -> dict[str, Any]:
        path = self.checkpoint_dir / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _checkpoint(
        self,
        epoch: int,
        best: float,
        best_epoch: int,
        best_state: Any,
        stale: int,
        step: int,
        optimizer: Any,
        scheduler: Any,
    ) -> None:
        if not distributed.is_main():  # every process holds the same weights: one writes
            return
        path = self.checkpoint_dir
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            str(path / "last.safetensors"),
        )
        if best_state is not None:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in best_state.items()},
                str(path / "best.safetensors"),
            )
        # Optimiser state is only ever read back by this code, never shipped in a model.
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            path / "optimizer.pt",
        )
        (path / "state.json").write_text(
            json.dumps(
                {
                    "config": self._hash(),
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "step": step,
                }
            )
        )

    def _resume(self, optimizer: Any, scheduler: Any) -> tuple[int, float, int, Any, int, int]:
        """(epoch, best score, best epoch, best weights, stale epochs, step) to continue from."""
        state = self._state()
        fresh = (0, -1.0, 0, None, 0, 0)
        if not state:
            return fresh
        if state.get("config") != self._hash():
            log.info("checkpoint in %s is for other settings; starting afresh", self.checkpoint_dir)
            return fresh
        self.model.load_state_dict(
            load_file(str(self.checkpoint_dir / "last.safetensors"), device=str(self.device))
        )
        extra = torch.load(self.checkpoint_dir / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        best_path = self.checkpoint_dir / "best.safetensors"
        best_state = (
            load_file(str(best_path), device=str(self.device)) if best_path.is_file() else None
        )
        log.info("resuming from epoch %d of %s", state["epoch"], self.checkpoint_dir)
        return (
            state["epoch"],
            state["best"],
            state["best_epoch"],
            best_state,
            state["stale"],
            state["step"],
        )
