"""The model-directory contract shared by every model kind, and its validation.

A model directory describes itself:

    config.json            model_type, heads (id2label/label2id), temperatures, thresholds, version
    training_config.json   the resolved training settings
    metrics.json           validation metrics written at training time
    README.md              the model card
    taxonomy.yaml          the taxonomy the labels were derived with
    locations.json         street/landmark -> kelurahan index learned from training addresses
    tfidf.json             (tfidf) vectoriser settings and vocabularies
    tfidf.safetensors      (tfidf) idf vectors and linear weights
    model.safetensors      (transformer) the encoder and heads, with tokenizer files beside it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.labels import HEADS, LabelSet

CONFIG = "config.json"
TRAINING_CONFIG = "training_config.json"
METRICS = "metrics.json"
CARD = "README.md"
TAXONOMY = "taxonomy.yaml"
LOCATIONS = "locations.json"
TFIDF_VECTORS = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
WEIGHTS = "model.safetensors"
PLOTS = "plots"

MODEL_TYPES = ("aduan-tfidf", "aduan-transformer")


class ModelDirError(ValueError):
    """A model directory that cannot be loaded; the message says what is wrong and where."""


def write_json(path: Path, data: Any) -> None:
    path.write_text(
        json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8"
    )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelDirError(f"{path}: file is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: not valid JSON ({exc})") from exc


def read_config(model_dir: Path | str) -> dict[str, Any]:
    """Read and validate `config.json`; every head must carry a dense id2label map."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir}: not a model directory")
    config = read_json(model_dir / CONFIG)
    if not isinstance(config, dict):
        raise ModelDirError(f"{model_dir / CONFIG}: expected a JSON object")
    if config.get("model_type") not in MODEL_TYPES:
        raise ModelDirError(
            f"{model_dir / CONFIG}: model_type must be one of {MODEL_TYPES}, "
            f"got {config.get('model_type')!r}"
        )
    heads = config.get("heads")
    if not isinstance(heads, dict):
        raise ModelDirError(f"{model_dir / CONFIG}: config.json does not contain heads")
    for head in HEADS:
        if head not in heads:
            raise ModelDirError(f"{model_dir / CONFIG}: head {head!r} is missing")
        try:
            LabelSet.from_json(heads[head])
        except (ValueError, TypeError, AttributeError) as exc:
            raise ModelDirError(
                f"{model_dir / CONFIG}: head {head!r}: config.json does not contain a valid "
                f"id2label ({exc})"
            ) from exc
    return config


def head_labels(config: dict[str, Any]) -> dict[str, LabelSet]:
    """The label set of every head in a validated config."""
    return {head: LabelSet.from_json(spec) for head, spec in config["heads"].items()}
