"""ONNX Runtime as the transformer's engine, and exporting a directory's network to ONNX.

Running needs only `onnxruntime` and numpy (no torch: a small, fast-starting serving process);
exporting needs torch (`aduan export`, or training with `export` set).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import ModelDirError
from .layout import MODEL_TYPE, ONNX_FP32, ONNX_INT8

log = logging.getLogger(__name__)

QUANTIZATIONS = ("", "fp32", "int8")


def session_options(threads: int = 0) -> Any:
    """One intra-op pool of `threads` (default: the cores), no spinning between runs: a
    spinning pool starves (and is starved by) any other busy process on a small machine."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxEngine:
    """Runs an exported network with ONNX Runtime on numpy batches."""

    def __init__(self, session: Any, outputs: list[str]) -> None:
        self.session = session
        self.outputs = outputs

    @classmethod
    def from_file(cls, path: Path, threads: int = 0) -> OnnxEngine:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # truncated or foreign file
            raise ModelDirError(f"{path}: unreadable ONNX model ({exc})") from exc
        return cls(session, [o.name for o in session.get_outputs()])

    @classmethod
    def load(cls, model_dir: Path, config: dict[str, Any], threads: int = 0) -> OnnxEngine:
        exported = config.get("onnx") or {}
        name = exported.get("file")
        if not name:
            raise ModelDirError(
                f"{model_dir}: no exported ONNX model; run `aduan export --model {model_dir}` "
                "or use the torch engine"
            )
        path = model_dir / name
        if not path.is_file():
            raise ModelDirError(f"{path}: required file is missing")
        return cls.from_file(path, threads)

    def __call__(self, input_ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})
        return dict(zip(self.outputs, values, strict=True))


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the matrix products (weights int8 per channel,
    activations quantised on the fly): VNNI/AMX integer kernels on x86 CPUs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
    )


def export_network(network: Any, model_dir: Path, quantization: str) -> dict[str, Any]:
    """Write the network as `model.onnx` (`fp32`) or only its int8 copy `model.int8.onnx`
    (`int8`; the fp32 graph it is made from is not kept) into `model_dir`; returns the `onnx`
    entry of config.json (`file` is the one the `onnx` engine runs)."""
    from .network import export_onnx

    if quantization not in QUANTIZATIONS[1:]:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS[1:]}, got {quantization!r}")
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".export-") as tmp:
        fp32 = Path(tmp) / ONNX_FP32
        outputs = export_onnx(network, fp32)
        name = ONNX_FP32
        if quantization == "int8":
            name = ONNX_INT8
            quantize_int8(fp32, Path(tmp) / ONNX_INT8)
        shutil.move(str(Path(tmp) / name), model_dir / name)
    log.info("exported %s to %s", name, model_dir)
    return {"file": name, quantization: name, "outputs": outputs}


def export_model_dir(model_dir: Path, quantization: str = "int8") -> dict[str, Any]:
    """`aduan export`: add the ONNX files to an existing transformer directory and record them
    (and the onnxruntime version) in its config.json."""
    from .artifacts import (
        CONFIG,
        head_labels,
        library_versions,
        read_config,
        verify_manifest,
        write_json,
        write_manifest,
    )
    from .network import load_network

    config = read_config(model_dir)
    if config["model_type"] != MODEL_TYPE:
        raise ModelDirError(f"{model_dir}: only transformer directories have a network to export")
    verify_manifest(model_dir)  # never re-sign files that were already changed
    network = load_network(model_dir, config, head_labels(config))
    entry = export_network(network, model_dir, quantization)
    # Files exported before stay usable (`fp32`/`int8` keys); `file` is the new one.
    config["onnx"] = {**(config.get("onnx") or {}), **entry}
    config["versions"] = {**config.get("versions", {}), **library_versions(("onnxruntime",))}
    write_json(model_dir / CONFIG, config)
    write_manifest(model_dir)
    return dict(config["onnx"])
