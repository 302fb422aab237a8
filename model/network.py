"""The transformer kind's network in PyTorch: a Hugging Face encoder, mean pooling and one
linear head per task; loading and saving it, running it (`TorchEngine`) and exporting it to
ONNX. Only imported when PyTorch is the engine, or to train, save or export."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .artifacts import ModelDirError
from .labels import LabelSet
from .layout import HEADS_FILE, LEGACY_WEIGHTS, is_legacy

HEAD_PREFIX = "heads."


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states under the attention mask (how e5 was trained)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class MultiHeadClassifier(nn.Module):
    """Encoder + mean pooling + dropout + one linear layer per head."""

    def __init__(
        self, encoder: nn.Module, hidden: int, head_sizes: dict[str, int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder: Any = encoder  # a Hugging Face encoder (BERT-like)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in head_sizes.items()})

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pooled_heads(hidden, attention_mask)

    def pooled_heads(self, hidden: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.dropout(mean_pool(hidden, mask))
        return {name: head(pooled) for name, head in self.heads.items()}

    # The encoder split in two, for training that computes the frozen lower layers once.
    @property
    def layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self.encoder.encoder.layer
        return layers

    def _mask(self, hidden: torch.Tensor, mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=mask
        )

    def lower(self, input_ids: torch.Tensor, mask: torch.Tensor, layers: int) -> torch.Tensor:
        """Hidden states after the embeddings and the first `layers` layers."""
        hidden = self.encoder.embeddings(input_ids=input_ids)
        extended = self._mask(hidden, mask)
        for layer in self.layers[:layers]:
            hidden = layer(hidden, extended)
        return hidden

    def upper(
        self, hidden: torch.Tensor, mask: torch.Tensor, start: int
    ) -> dict[str, torch.Tensor]:
        """The layers from `start` on, pooling and heads: `forward` continued from `lower`."""
        extended = self._mask(hidden, mask)
        for layer in self.layers[start:]:
            hidden = layer(hidden, extended)
        return self.pooled_heads(hidden, mask)


def build_encoder(encoder_config: dict[str, Any]) -> Any:
    """A randomly initialised encoder from its settings (format 1-2 directories)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**encoder_config)
    return AutoModel.from_config(config, **_no_pooler(config.model_type))


def _no_pooler(model_type: str) -> dict[str, Any]:
    # BERT's pooler is unused (mean pooling) and e5 ships none.
    return {"add_pooling_layer": False} if model_type in ("bert", "xlm-roberta", "roberta") else {}


def load_encoder(folder: Path | str) -> Any:
    """A Hugging Face encoder folder (or hub id), without the unused pooler."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(folder))
    # safetensors only: without it transformers would fall back to a pickled
    # pytorch_model.bin, whose loading can run code.
    return AutoModel.from_pretrained(
        str(folder), use_safetensors=True, **_no_pooler(config.model_type)
    )


def encoder_settings(encoder: Any) -> dict[str, Any]:
    """The encoder's own settings, as recorded in config.json."""
    settings: dict[str, Any] = encoder.config.to_diff_dict()
    settings.pop("_name_or_path", None)
    settings.pop("transformers_version", None)
    settings["model_type"] = encoder.config.model_type
    return settings


def load_network(
    model_dir: Path, config: dict[str, Any], labels: dict[str, LabelSet]
) -> MultiHeadClassifier:
    """The network of a transformer directory, in eval mode; `ModelDirError` names the file
    that is missing or corrupt."""
    from safetensors.torch import load_file

    sizes = {h: len(ls) for h, ls in labels.items()}
    if is_legacy(config):
        network = MultiHeadClassifier(
            build_encoder(config["encoder"]), int(config["encoder"]["hidden_size"]), sizes
        )
        path = model_dir / LEGACY_WEIGHTS
        try:
            network.load_state_dict(load_file(str(path)), strict=True)
        except Exception as exc:  # truncated file, wrong shapes, missing tensors
            raise ModelDirError(f"{path}: unreadable or corrupt weights ({exc})") from exc
        return network.eval()
    folder = model_dir / str(config["encoder"])
    try:
        encoder = load_encoder(folder)
    except Exception as exc:
        raise ModelDirError(f"{folder}: unreadable or corrupt encoder weights ({exc})") from exc
    network = MultiHeadClassifier(encoder, int(encoder.config.hidden_size), sizes)
    path = model_dir / HEADS_FILE
    try:
        state = {k.removeprefix(HEAD_PREFIX): v for k, v in load_file(str(path)).items()}
        network.heads.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelDirError(f"{path}: unreadable or corrupt weights ({exc})") from exc
    return network.eval()


def save_network(network: MultiHeadClassifier, encoder_dir: Path, heads_file: Path) -> dict:
    """The encoder as a standard Hugging Face folder, the heads beside it; returns the
    encoder's settings."""
    from safetensors.torch import save_file

    network.encoder.save_pretrained(str(encoder_dir), safe_serialization=True)
    heads = {f"{HEAD_PREFIX}{k}": v.contiguous() for k, v in network.heads.state_dict().items()}
    save_file(heads, str(heads_file), metadata={"format": "pt"})
    return encoder_settings(network.encoder)


class TorchEngine:
    """Runs the network with PyTorch (fp32) on numpy batches."""

    def __init__(self, network: MultiHeadClassifier, threads: int = 0) -> None:
        self.network = network.eval()
        if threads:
            torch.set_num_threads(threads)

    @torch.inference_mode()
    def __call__(self, input_ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        out = self.network(torch.from_numpy(input_ids), torch.from_numpy(mask))
        return {head: logits.float().numpy() for head, logits in out.items()}


class _Exported(nn.Module):
    """The network with its heads as a tuple of outputs, for the ONNX exporter."""

    def __init__(self, network: MultiHeadClassifier) -> None:
        super().__init__()
        self.network = network
        self.names = list(network.heads)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
        out = self.network(input_ids, attention_mask)
        return tuple(out[name] for name in self.names)


def export_onnx(network: MultiHeadClassifier, path: Path, opset: int = 17) -> list[str]:
    """Encoder, pooling and heads as one ONNX graph with dynamic batch and length axes;
    returns the output (head) names."""
    # The exporter restores the training mode of the module it is given when it is done: the
    # wrapper must be in eval mode too, or the network comes back with dropout switched on.
    wrapped = _Exported(network.eval()).eval()
    example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}}
    axes.update({name: {0: "batch"} for name in wrapped.names})
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns about Python-side shape checks that hold for every input here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            example,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=wrapped.names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return wrapped.names
