"""Masked-language-model training of base encoders, with a progress bar, checkpoints every
`save_every` steps and resuming: `aduan base adapt` (and the `full` preset's `adapt_steps`),
domain-adaptive pretraining, i.e. MLM continued from an existing base (e5) on Indonesian
public-service text and the training complaints, before fine-tuning. Pretraining from scratch
(`aduan base pretrain`) is an experiment: `aduan.training.experiments.scratch`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from aduan.model.progress import progress
from aduan.training.batches import bucketed_batches
from aduan.training.data import check_date
from aduan.training.distributed import use_bf16

from .trim import iter_texts

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class MlmConfig:
    """The masked-language-model loop's settings (both from scratch and continued)."""

    max_length: int = 128
    batch_size: int = 32
    epochs: int = 1
    max_steps: int = 0  # 0: as many as the epochs take
    lr: float = 5e-5
    mask_probability: float = 0.15
    save_every: int = 200
    seed: int = 13
    bf16: bool = True
    # Steps that train only a fresh MLM head (encoder frozen, lr `head_lr`) before the rest,
    # so that a random head's gradients do not disturb a pretrained encoder.
    head_warmup_steps: int = 0
    head_lr: float = 1e-3
    device: str = "cpu"  # "cpu" or "cuda" (bench/gpu.py); the result is saved from the CPU


def corpus_texts(corpus: list[Path], until: str | None = None) -> list[str]:
    if until:
        check_date(until, "until")
    texts = list(iter_texts(corpus, until=until))
    if not texts:
        raise ValueError("the corpus holds no text")
    return texts


def adapt(
    base: str, corpus: list[Path], output: Path, config: MlmConfig, until: str | None = None
) -> dict[str, float]:
    """Continue MLM from `base` (same tokenizer, same ids) on `corpus`; complaint files are
    read up to `until` so that no later (validation) text is seen. Resumable like `pretrain`.

    e5 ships no MLM head: BERT's prediction head starts fresh (its decoder tied to the word
    embeddings), which a few hundred steps at a low learning rate settle.
    """
    from transformers import AutoModelForMaskedLM, PreTrainedTokenizerFast

    torch.manual_seed(config.seed)
    texts = corpus_texts(corpus, until)
    work = output / ".adapt"
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base)
    model = AutoModelForMaskedLM.from_pretrained(base)
    report = mlm_train(model, tokenizer, texts, config, work, "adapting")
    tokenizer.save_pretrained(str(work))
    export_encoder(report.pop("model"), work, output)
    (output / "adapted_from.json").write_text(
        json.dumps({"base": str(base), "texts": len(texts), "until": until, **asdict(config)})
    )
    return report


def export_encoder(model: Any, work: Path, output: Path) -> None:
    """The encoder without its MLM head, plus the tokenizer files, as a base directory."""
    encoder = getattr(model, model.base_model_prefix)
    encoder.save_pretrained(str(output))
    for name in TOKENIZER_FILES:
        if (work / name).is_file():
            shutil.copyfile(work / name, output / name)


def _masked_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """MLM loss computed on the masked positions only: the vocabulary projection of every
    position would cost as much as the encoder itself on a CPU."""
    labels = batch["labels"]
    encoder = getattr(model, model.base_model_prefix)
    head = getattr(model, "cls", None)
    if head is None:  # another architecture: its own (full) loss
        return model(**batch).loss
    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    picked = labels != -100
    logits = head(hidden[picked])
    return torch.nn.functional.cross_entropy(logits.float(), labels[picked])


def _mlm_step(
    model: Any, batch: dict[str, torch.Tensor], optimizer: Any, config: MlmConfig, clip: bool
) -> float:
    """One optimiser step on one masked batch (gradient norm clipped to 1 when `clip`)."""
    batch = {name: tensor.to(config.device) for name, tensor in batch.items()}
    device_type = "cuda" if config.device.startswith("cuda") else "cpu"
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.bf16):
        loss = _masked_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.item())


def _warm_up_head(
    model: Any, ids: list[list[int]], lengths: list[int], collator: Any, config: MlmConfig
) -> list[float]:
    """Train the MLM head alone for `head_warmup_steps` (the tied word embeddings and the
    encoder stay frozen; no gradient flows through the encoder, so these steps are cheap)."""
    encoder = getattr(model, model.base_model_prefix)
    frozen = [p for p in encoder.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    head = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(head, lr=config.head_lr)
    batches = bucketed_batches(lengths, config.batch_size, random.Random(config.seed - 1))
    bar = progress(total=config.head_warmup_steps, desc="warming up the MLM head", unit="step")
    losses = []
    for n in range(config.head_warmup_steps):
        batch = collator([{"input_ids": ids[i]} for i in batches[n % len(batches)]])
        losses.append(_mlm_step(model, batch, optimizer, config, clip=False))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    for param in frozen:
        param.requires_grad_(True)
    return losses


def mlm_train(
    model: Any, tokenizer: Any, texts: list[str], config: MlmConfig, work: Path, desc: str
) -> dict[str, Any]:
    """The MLM loop: length-bucketed batches, AdamW with warm-up, bf16 autocast, checkpoints
    in `work` (resumed when the settings match). Returns the losses and the trained model."""
    from safetensors.torch import load_model, save_model
    from transformers import DataCollatorForLanguageModeling, get_linear_schedule_with_warmup

    config = replace(config, bf16=use_bf16(config.bf16, config.device))
    # A base with fewer positions than `max_length` (e.g. a small test encoder) caps it.
    positions = getattr(model.config, "max_position_embeddings", None) or config.max_length
    max_length = min(config.max_length, int(positions))
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    lengths = [len(x) for x in ids]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mask_probability)
    steps_per_epoch = (len(ids) + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    model.to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total // 20), total)
    step = 0
    state_file = work / "state.json"
    if state_file.is_file() and json.loads(state_file.read_text())["config"] == asdict(config):
        load_model(model, str(work / "model.safetensors"), device=config.device)
        extra = torch.load(work / "optimizer.pt", weights_only=True, map_location=config.device)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        step = json.loads(state_file.read_text())["step"]
        log.info("resuming %s at step %d", desc, step)

    def checkpoint() -> None:
        save_model(model, str(work / "model.safetensors"))  # handles the tied decoder
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            work / "optimizer.pt",
        )
        state_file.write_text(json.dumps({"config": asdict(config), "step": step}))

    model.train()
    report: dict[str, Any] = {}
    if step == 0 and config.head_warmup_steps:
        head_losses = _warm_up_head(model, ids, lengths, collator, config)
        report = {"head_first_loss": head_losses[0], "head_last_loss": head_losses[-1]}
    losses: list[float] = []
    bar = progress(total=total, initial=step, desc=desc, unit="step")
    while step < total:
        epoch = step // steps_per_epoch
        batches = bucketed_batches(lengths, config.batch_size, random.Random(config.seed + epoch))
        for batch_ids in batches[step % steps_per_epoch :]:
            batch = collator([{"input_ids": ids[i]} for i in batch_ids])
            losses.append(_mlm_step(model, batch, optimizer, config, clip=True))
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % config.save_every == 0:
                checkpoint()
            if step >= total:
                break
    bar.close()
    checkpoint()
    model.to("cpu")
    window = max(1, min(50, len(losses) // 5))
    first = sum(losses[:window]) / window if losses else float("nan")
    last = sum(losses[-window:]) / window if losses else float("nan")
    return {"steps": step, "first_loss": first, "last_loss": last, **report, "model": model}
