"""`aduan base pretrain` on a tiny corpus: a loadable tokenizer + encoder, learning, resuming."""

import re

from typer.testing import CliRunner

from tests.conftest import make_complaints
from training.cli import app

TINY = [
    "--set",
    "vocab_size=150",
    "--set",
    "hidden=32",
    "--set",
    "layers=1",
    "--set",
    "heads=2",
    "--set",
    "intermediate=64",
    "--set",
    "max_length=32",
    "--set",
    "batch_size=16",
    "--set",
    "epochs=5",
    "--set",
    "max_steps=60",
    "--set",
    "lr=0.003",
    "--set",
    "bf16=false",
    "--set",
    "save_every=20",
]


def test_pretrain_builds_a_loadable_encoder_that_learns(tmp_path, caplog):
    from transformers import AutoModel, AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_complaints(200)["text"]) + "\n")
    runner = CliRunner()
    result = runner.invoke(
        app, ["base", "pretrain", "--corpus", str(corpus), "--output", str(tmp_path / "enc"), *TINY]
    )
    assert result.exit_code == 0, result.output
    first, last = map(
        float, re.search(r"'first_loss': ([\d.]+), 'last_loss': ([\d.]+)", result.output).groups()
    )
    assert last < first - 0.5
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "enc")
    model = AutoModel.from_pretrained(tmp_path / "enc")
    ids = tokenizer("sampah menumpuk di TPS")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and tokenizer.unk_token_id not in ids
    assert tokenizer.pad_token_id == 1 and model.config.hidden_size == 32
    with caplog.at_level("INFO"):
        again = runner.invoke(
            app,
            ["base", "pretrain", "--corpus", str(corpus), "--output", str(tmp_path / "enc"), *TINY],
        )
    assert again.exit_code == 0 and "resuming pretraining at step 60" in caplog.text


def test_pretrain_rejects_unknown_settings_and_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    runner = CliRunner()
    bad = runner.invoke(
        app,
        [
            "base",
            "pretrain",
            "--corpus",
            str(empty),
            "--output",
            str(tmp_path / "o"),
            "--set",
            "colour=red",
        ],
    )
    assert bad.exit_code == 2 and "unknown pretraining setting" in bad.output
    nothing = runner.invoke(
        app, ["base", "pretrain", "--corpus", str(empty), "--output", str(tmp_path / "o")]
    )
    assert nothing.exit_code == 2 and "no text" in nothing.output
