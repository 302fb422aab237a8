"""`--trim-vocab`: keep only the pieces that occur in given texts, remapping the embeddings.

multilingual-e5-small spends 96M of its 118M parameters on a 250k-piece vocabulary for ~100
languages; Indonesian complaints use a small fraction. Trimming to the pieces seen in the
Indonesian corpus and training texts (plus the special tokens) keeps the same token ids for
those texts (segmentations only use pieces that were seen) at about a third of the size.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from aduan.model.progress import progress

log = logging.getLogger(__name__)

SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def iter_texts(paths: Iterable[Path], until: str | None = None) -> Iterator[str]:
    """Lines of .txt files; the text column of CSV/JSON Lines/Parquet complaint files (only
    complaints created on or before the date `until`, when given)."""
    for path in paths:
        if path.suffix.lower() == ".txt":
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.strip():
                        yield line.strip()
        else:
            import pandas as pd

            from aduan.training.data import load_complaints

            frame = load_complaints(path)
            if until:
                end = pd.Timestamp(until) + pd.Timedelta(days=1)
                frame = frame[frame["created_at"] < end]
            yield from frame["text"]


def used_ids(tokenizer_file: Path, texts: Iterable[str], batch: int = 2048) -> set[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    seen: set[int] = set()
    chunk: list[str] = []
    bar = progress(desc="tokenizing", unit=" texts")
    for text in texts:
        chunk.append(text)
        if len(chunk) == batch:
            for enc in tokenizer.encode_batch(chunk):
                seen.update(enc.ids)
            bar.update(len(chunk))
            chunk = []
    for enc in tokenizer.encode_batch(chunk):
        seen.update(enc.ids)
    bar.update(len(chunk))
    bar.close()
    return seen


def trim_vocab(base: Path, texts: Iterable[Path], output: Path) -> dict[str, int]:
    """Write `output`: `base` with only the pieces used by `texts` (ids remapped together)."""
    import torch
    from safetensors.torch import load_file, save_file

    spec = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    keep_set = used_ids(base / "tokenizer.json", iter_texts(texts))
    keep_set |= {i for i, (piece, _) in enumerate(vocab) if piece in SPECIAL_PIECES}
    keep = sorted(keep_set)
    remap = {old: new for new, old in enumerate(keep)}
    spec["model"]["vocab"] = [vocab[i] for i in keep]
    spec["model"]["unk_id"] = remap[spec["model"]["unk_id"]]
    for token in spec.get("added_tokens") or []:
        token["id"] = remap[token["id"]]
    post = spec.get("post_processor") or {}
    for entry in (post.get("special_tokens") or {}).values():
        entry["ids"] = [remap[i] for i in entry["ids"]]

    state = load_file(str(base / "model.safetensors"))
    name = "embeddings.word_embeddings.weight"
    old_rows = state[name].shape[0]
    state[name] = state[name][torch.tensor(keep)].contiguous()
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] = len(keep)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if config.get(key) is not None:
            config[key] = remap[config[key]]

    output.mkdir(parents=True, exist_ok=True)
    save_file(state, str(output / "model.safetensors"), metadata={"format": "pt"})
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (output / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    for extra in ("tokenizer_config.json", "special_tokens_map.json"):
        if (base / extra).exists():
            shutil.copyfile(base / extra, output / extra)
    params = int(sum(np.prod(t.shape) for t in state.values()))
    log.info("kept %d of %d pieces; %d parameters", len(keep), old_rows, params)
    return {"kept_pieces": len(keep), "original_rows": old_rows, "parameters": params}
