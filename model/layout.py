"""The files of a transformer model directory (format 3), shared by the kind
(`transformer.py`) and its engines (`network.py`, `onnx.py`)."""

from __future__ import annotations

from typing import Any

MODEL_TYPE = "aduan-transformer"
ENCODER_DIR = "encoder"  # a standard Hugging Face folder, tokenizer included
HEADS_FILE = "heads.safetensors"
LEGACY_WEIGHTS = "model.safetensors"  # formats 1-2: encoder.* and heads.* in one file
ROUTING = "routing.json"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"


def is_legacy(config: dict[str, Any]) -> bool:
    """Formats 1-2: the encoder's settings inline and one weights file."""
    return isinstance(config.get("encoder"), dict)
