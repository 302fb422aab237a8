"""The transformer kind's trainer: `select` fine-tunes on the training months (the epoch count
chosen by early stopping on the validation months), adds the topic routing table and the TF-IDF
model, and chooses the mixing weights on the validation months, on the engine the model ships
with; `refit` fine-tunes again on every row for the chosen epoch count, with the same base,
tokenizer, cached frozen layers and mixing. The loop itself is `loop.py`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aduan.model.network import TorchEngine
from aduan.model.tfidf import TfidfBackend
from aduan.model.transformer import TokenIds, TransformerBackend, mix

from . import distributed
from .config import TrainConfig
from .data import Splits
from .loop import FineTuning, LossHook, LowerCache
from .mixing import fit_mixing, routing_table
from .provenance import portable
from .steps import Selection

log = logging.getLogger(__name__)


def resolve_base(config: TrainConfig) -> str:
    """The base encoder: `--base` as given, else the cached default (built when missing,
    then domain-adapted when `adapt_steps` asks for it)."""
    settings = config.transformer
    if settings.base:
        return settings.base
    from .bases.build import adapted_base, default_base
    from .bases.pretrain import MlmConfig

    base = default_base(Path(settings.base_cache), config.data)
    if settings.adapt_steps:
        adaptation = MlmConfig(
            max_steps=settings.adapt_steps,
            lr=settings.adapt_lr,
            head_warmup_steps=round(settings.adapt_steps * settings.adapt_head_warmup),
        )
        base = adapted_base(base, config.data, config.train_until, adaptation)
    return str(base)


def load_tokenizer(base: str, max_length: int, scratch: Path) -> TokenIds:
    """The base's tokenizer; a hub id is saved to `scratch` first (needs a network)."""
    if Path(base).is_dir():
        return TokenIds.load(Path(base), max_length)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base).save_pretrained(str(scratch))
    return TokenIds.load(scratch, max_length)


@dataclass(kw_only=True)
class TransformerSelection(Selection):
    """The selection run's model and what its refit reuses: the base, its tokenizer, the
    cache of the frozen layers, the chosen epoch count and mixing weights."""

    base: str
    tokenizer: TokenIds
    cache: LowerCache | None
    epochs: int
    mixing: dict[str, Any]  # per routed head: component temperatures and weights

    def chosen(self) -> dict[str, Any]:
        return {"base_encoder": portable(self.base), "epochs_selected": self.epochs}

    def reused(self) -> dict[str, Any]:
        return {"refit_epochs": self.epochs}


class TransformerTrainer:
    """The `transformer` kind's two steps. `extra_loss` is the hook an experiment adds a loss
    term with (distillation); the product trains without one."""

    def __init__(
        self, config: TrainConfig, checkpoint_dir: Path, extra_loss: LossHook | None = None
    ) -> None:
        self.config = config
        self.checkpoint_dir = checkpoint_dir
        self.extra_loss = extra_loss

    def _threads(self) -> None:
        # torchrun's processes on one machine share its cores
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        cores = max(1, (os.cpu_count() or 1) // local_processes)
        torch.set_num_threads(self.config.threads or cores)

    def select(self, splits: Splits) -> TransformerSelection:
        """Fine-tune with early stopping, then (rank 0, the only process that mixes and
        writes) the routing table, the TF-IDF model and the mixing weights."""
        self._threads()
        settings = self.config.transformer
        with distributed.main_first():  # rank 0 builds a missing cached base; the others find it
            base = resolve_base(self.config)
            log.info("base encoder: %s", base)
            tokenizer = load_tokenizer(base, settings.max_length, self.checkpoint_dir / "tokenizer")
        cache = LowerCache(settings.frozen_layers) if settings.frozen_layers else None
        run = FineTuning(
            self.config, splits, self.checkpoint_dir, base, tokenizer, cache, 0, self.extra_loss
        )
        epochs = run.train()
        model = self._assemble(run, splits, {})
        mixing: dict[str, Any] = {}
        valid_logits = None
        if distributed.is_main():
            _shipped_engine(model, settings.export, self.config.threads)
            mixing, valid_logits = self._mix(model, run, splits)
            model.mixing = mixing
        return TransformerSelection(
            model,
            valid_logits,
            base=base,
            tokenizer=tokenizer,
            cache=cache,
            epochs=epochs,
            mixing=mixing,
        )

    def refit(self, selection: TransformerSelection, every: Splits) -> TransformerBackend:
        """The network, routing table and TF-IDF model fitted on `every.train` for the
        selected epoch count; the mixing weights stay the selection's."""
        self._threads()
        run = FineTuning(
            self.config,
            every,
            self.checkpoint_dir / "refit",
            selection.base,
            selection.tokenizer,
            selection.cache,
            fixed_epochs=selection.epochs,
            extra_loss=self.extra_loss,
        )
        run.train()
        return self._assemble(run, every, selection.mixing)

    def _mix(
        self, model: TransformerBackend, run: FineTuning, splits: Splits
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The mixing weights chosen on the validation rows, and the mixed log-probabilities
        there (what `model.logits` gives with them)."""
        texts = splits.valid["text"].tolist()
        raw = model.encoder_logits(texts)
        tfidf = model.tfidf.logits(texts) if model.tfidf is not None else None
        mixing = fit_mixing(
            raw,
            run.targets["valid"],
            model.routes,
            tfidf,
            self.config.mixing.objective,
            self.config.route_accuracy,
        )
        return mixing, mix(raw, model.routes, mixing, tfidf)

    def _assemble(
        self, run: FineTuning, splits: Splits, mixing: dict[str, Any]
    ) -> TransformerBackend:
        """The fitted network with its routing table (counted on the training rows) and the
        TF-IDF model (fitted on them; by rank 0 alone), running on PyTorch."""
        config = self.config
        routing = routing_table(run.topics[0], splits.train) if run.topics is not None else None
        tfidf = None
        if config.mixing.tfidf and distributed.is_main():
            from .baseline import fit_baseline

            tfidf = TfidfBackend(fit_baseline(splits.train, config.tfidf, config.seed), run.labels)
        network = run.model.eval()
        return TransformerBackend(
            TorchEngine(network),
            run.tokenizer,
            {"max_length": config.transformer.max_length, "mixing": mixing},
            run.labels,
            routing,
            tfidf,
            network,
            "torch",
            config.transformer.export,
        )


def _shipped_engine(backend: TransformerBackend, export: str, threads: int) -> None:
    """Run the backend on the engine it will ship with (the exported ONNX file), so that the
    mixing, temperatures and thresholds are fitted on the numbers the service computes."""
    if not export:
        return
    from aduan.model.onnx import OnnxEngine, export_network

    with tempfile.TemporaryDirectory(prefix="aduan-export-") as tmp:
        entry = export_network(backend.network, Path(tmp), export)
        backend.engine = OnnxEngine.from_file(Path(tmp) / entry["file"], threads)
    backend.engine_name = "onnx"
