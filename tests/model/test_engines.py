"""The transformer directory as a portable Hugging Face encoder, and its engines: PyTorch and
ONNX Runtime (fp32 and int8) give the same answers; serving on ONNX never imports torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.artifacts import write_manifest
from aduan.model.classifier import ComplaintClassifier
from aduan.model.network import mean_pool
from aduan.model.transformer import TokenIds

runner = CliRunner()
TEXTS = [
    "lampu PJU padam gelap sekali",
    "sampah menumpuk di TPS bau busuk sudah seminggu",
    "bansos belum cair",
    "jalan rusak berlubang besar mohon segera ditindaklanjuti terima kasih",
]


@pytest.fixture(scope="module")
def exported(tiny_transformer, tmp_path_factory):
    """A copy of the tiny transformer with its network exported (fp32 and int8)."""
    target = tmp_path_factory.mktemp("exported") / "m"
    shutil.copytree(tiny_transformer, target)
    for quantization in ("fp32", "int8"):
        result = runner.invoke(app, ["export", "--model", str(target), "--quantize", quantization])
        assert result.exit_code == 0, result.output
    return target


def test_engines_encoder_folder_loads_with_plain_transformers(tiny_transformer):
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_transformer / "encoder"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder(**batch).last_hidden_state
    pooled = mean_pool(hidden, batch["attention_mask"])
    heads = load_file(tiny_transformer / "heads.safetensors")
    agency = pooled @ heads["heads.agency.weight"].T + heads["heads.agency.bias"]
    backend = ComplaintClassifier.load(tiny_transformer, engine="torch").backend
    ours = backend.encoder_logits(TEXTS)["agency"]
    np.testing.assert_allclose(agency.numpy(), ours, atol=1e-4)


def test_engines_token_ids_match_the_transformers_tokenizer(tiny_transformer):
    from transformers import AutoTokenizer

    folder = tiny_transformer / "encoder"
    reference = AutoTokenizer.from_pretrained(folder)(TEXTS, truncation=True, max_length=8)
    ours = TokenIds.load(folder, max_length=8)(TEXTS)
    assert ours == [list(ids) for ids in reference["input_ids"]]
    assert max(len(ids) for ids in ours) == 8  # truncation counts the special tokens


def test_engines_split_network_equals_the_whole(tiny_transformer):
    network = ComplaintClassifier.load(tiny_transformer, engine="torch").backend.network
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
    mask = (ids != 1).long()
    with torch.inference_mode():
        whole = network(ids, mask)
        split = network.upper(network.lower(ids, mask, 1), mask, 1)
    for head in whole:
        torch.testing.assert_close(whole[head], split[head], atol=1e-5, rtol=1e-5)


def test_engines_onnx_fp32_matches_torch_and_int8_stays_close(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["onnx"]["file"] == "model.int8.onnx" and (exported / "model.onnx").is_file()
    assert "onnxruntime" in config["versions"]
    torch_model = ComplaintClassifier.load(exported, engine="torch")
    onnx_model = ComplaintClassifier.load(exported, engine="onnx")
    assert onnx_model.backend.engine_name == "onnx"
    reference = torch_model.backend.encoder_logits(TEXTS)
    fp32 = onnx_model.backend.__class__.load(
        exported, {**config, "onnx": {**config["onnx"], "file": "model.onnx"}}, engine="onnx"
    )
    for head, logits in fp32.encoder_logits(TEXTS).items():
        np.testing.assert_allclose(logits, reference[head], atol=1e-4)
    torch_proba = torch_model.predict_proba(TEXTS)
    int8_proba = onnx_model.predict_proba(TEXTS)
    for head in ("category", "agency"):
        assert (torch_proba[head].argmax(1) == int8_proba[head].argmax(1)).all()
        assert np.abs(torch_proba[head] - int8_proba[head]).max() < 0.05


def test_engines_auto_prefers_onnx_and_torch_stays_available(exported, tiny_transformer):
    assert ComplaintClassifier.load(exported).backend.engine_name == "onnx"
    assert ComplaintClassifier.load(tiny_transformer).backend.engine_name == "torch"
    from aduan.model.artifacts import ModelDirError

    with pytest.raises(ModelDirError, match="aduan export"):
        ComplaintClassifier.load(tiny_transformer, engine="onnx")


def test_engines_onnx_serving_never_imports_torch(exported):
    code = (
        "import sys; from aduan.model.pipeline import Pipeline; "
        f"p = Pipeline.load({str(exported)!r}, engine='onnx'); "
        "print(p.run([('lampu PJU padam', None)])[0].heads['agency'][0].label); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    label, imported = out.stdout.strip().splitlines()
    assert label == "Dinas Perhubungan"
    assert imported == "False False"


def test_engines_directories_of_format_2_still_load(tiny_transformer, tmp_path):
    """One model.safetensors (encoder.* + heads.*), the tokenizer at the top, the encoder's
    settings inline: how directories were written before format 3."""
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_transformer, legacy)
    encoder = load_file(legacy / "encoder" / "model.safetensors")
    state = {f"encoder.{k}": v for k, v in encoder.items()}
    state.update(load_file(legacy / "heads.safetensors"))
    save_file(state, str(legacy / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (legacy / "encoder" / name).is_file():
            shutil.copy(legacy / "encoder" / name, legacy / name)
    config = json.loads((legacy / "config.json").read_text())
    config.update(format_version=2, encoder=config.pop("encoder_config"))
    (legacy / "config.json").write_text(json.dumps(config))
    shutil.rmtree(legacy / "encoder")
    (legacy / "heads.safetensors").unlink()
    (legacy / "manifest.json").unlink()  # format-2 directories had none: refused until
    write_manifest(legacy)  # `aduan models rehash` records the trusted files
    old = ComplaintClassifier.load(legacy).predict_proba(TEXTS)
    new = ComplaintClassifier.load(tiny_transformer).predict_proba(TEXTS)
    for head in old:
        np.testing.assert_allclose(old[head], new[head], atol=1e-6)


def test_engines_export_leaves_the_network_as_it_found_it(tiny_transformer, tmp_path):
    """The exporter restores the training mode of the module it is given: after an export
    the PyTorch engine must still run without dropout and agree with the exported file."""
    from aduan.model.onnx import OnnxEngine, export_network

    backend = ComplaintClassifier.load(tiny_transformer, engine="torch").backend
    entry = export_network(backend.network, tmp_path, "fp32")
    assert not any(module.training for module in backend.network.modules())
    onnx = OnnxEngine.from_file(tmp_path / entry["file"])
    ids = backend.tokenizer(TEXTS)
    from aduan.model.transformer import batched_logits

    ours = batched_logits(backend.engine, ids, backend.tokenizer.pad_id, 4)
    theirs = batched_logits(onnx, ids, backend.tokenizer.pad_id, 4)
    for head in ours:
        np.testing.assert_allclose(ours[head], theirs[head], atol=1e-4)
