"""`aduan base pretrain` on a tiny corpus: a loadable tokenizer + encoder, learning, resuming."""

import re

from typer.testing import CliRunner

from aduan.cli import app
from tests.conftest import make_complaints

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
    assert bad.exit_code == 2 and "unknown setting 'colour'" in bad.output
    nothing = runner.invoke(
        app, ["base", "pretrain", "--corpus", str(empty), "--output", str(tmp_path / "o")]
    )
    assert nothing.exit_code == 2 and "no text" in nothing.output


ADAPT = [
    "--set",
    "max_length=32",
    "--set",
    "batch_size=16",
    "--set",
    "epochs=4",
    "--set",
    "lr=0.003",
    "--set",
    "bf16=false",
    "--set",
    "save_every=10",
]


def test_pretrain_adapt_continues_a_base_on_earlier_texts_only(
    tmp_path, caplog, tiny_base, complaints_csv
):
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from aduan.training.data import load_complaints

    output = tmp_path / "adapted"
    args = ["base", "adapt", "--base", str(tiny_base), "--corpus", str(complaints_csv)]
    args += ["--until", "2023-01-31", "--output", str(output), *ADAPT]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    first, last = map(
        float, re.search(r"'first_loss': ([\d.]+), 'last_loss': ([\d.]+)", result.output).groups()
    )
    assert last < first - 0.3
    # Only complaints up to --until were read: the validation months stay unseen.
    frame = load_complaints(complaints_csv)
    earlier = int((frame["created_at"] < "2023-02-01").sum())
    assert 0 < earlier < len(frame)
    assert json.loads((output / "adapted_from.json").read_text())["texts"] == earlier
    # Same tokenizer and ids as the base; the encoder weights moved; no MLM head is shipped.
    sentence = "sampah menumpuk di TPS"
    base_tok, new_tok = (
        AutoTokenizer.from_pretrained(tiny_base),
        AutoTokenizer.from_pretrained(output),
    )
    assert base_tok(sentence)["input_ids"] == new_tok(sentence)["input_ids"]
    before, after = (
        load_file(tiny_base / "model.safetensors"),
        load_file(output / "model.safetensors"),
    )
    assert set(after) == set(before)
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[name], after[name])
    model = AutoModel.from_pretrained(output)
    assert model.config.hidden_size == AutoModel.from_pretrained(tiny_base).config.hidden_size
    with caplog.at_level("INFO"):
        again = runner.invoke(app, args)
    assert again.exit_code == 0 and "resuming adapting at step" in caplog.text


def test_pretrain_adapt_head_warmup_trains_the_head_alone(tmp_path, tiny_base, complaints_csv):
    from safetensors.torch import load_file

    output = tmp_path / "warm"
    args = ["base", "adapt", "--base", str(tiny_base), "--corpus", str(complaints_csv)]
    args += ["--output", str(output), *ADAPT, "--set", "epochs=0", "--set", "head_warmup_steps=15"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    first, last = map(
        float,
        re.search(
            r"'head_first_loss': ([\d.]+), 'head_last_loss': ([\d.]+)", result.output
        ).groups(),
    )
    assert last < first  # the head learned ...
    before, after = (
        load_file(tiny_base / "model.safetensors"),
        load_file(output / "model.safetensors"),
    )
    assert all((before[k] == after[k]).all() for k in before)  # ... the encoder did not move


def test_pretrain_adapt_reports_a_missing_base_and_a_bad_date(tmp_path, complaints_csv):
    runner = CliRunner()
    common = ["base", "adapt", "--corpus", str(complaints_csv), "--output", str(tmp_path / "o")]
    missing = runner.invoke(app, [*common, "--base", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 2 and "nothing-here" in missing.output
    bad = runner.invoke(app, [*common, "--base", str(tmp_path), "--until", "31/01/2023"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


def test_pretrain_adapted_base_is_built_once_per_setting(tmp_path, tiny_base, complaints_csv):
    import shutil

    from aduan.training.bases.build import adapted_base
    from aduan.training.bases.pretrain import MlmConfig

    base = tmp_path / "e5"
    shutil.copytree(tiny_base, base)
    corpus = tmp_path / "tweets.txt"
    corpus.write_text("lampu jalan mati min\nmohon info jadwal bansos\n")

    def build(until: str):
        config = MlmConfig(max_steps=3, head_warmup_steps=1)
        return adapted_base(base, [str(complaints_csv)], until, config, [corpus])

    first = build("2023-01-31")
    assert first.parent == base.parent and (first / "adapted_from.json").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert build("2023-01-31") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not retrained
    assert build("2022-12-31") != first
