"""The experiments kept out of the product trainer (`aduan.training.experiments`): the
ablation (from a run and from a directory), the prior-correction search, distillation."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.model.artifacts import read_config
from aduan.model.transformer import mix
from aduan.training.experiments.cli import app
from tests.conftest import tiny_transformer_args

runner = CliRunner()

VARIANTS = {
    "tf-idf alone (baseline)",
    "encoder",
    "encoder + routing table",
    "encoder + tf-idf",
    "encoder + routing table + tf-idf",
    *(f"encoder + routing table + tf-idf, prior correction {t}" for t in (0.25, 0.5, 1.0)),
    "encoder + routing table + tf-idf, mixed for the metrics",
    "encoder + routing table + tf-idf, mixed for the metrics, prior correction searched",
}


def experiment_args(command: str, base, data, output) -> list[str]:
    """`tiny_transformer_args` for an experiment command (the base given as a setting)."""
    args = tiny_transformer_args(base, data, output)[1:]
    at = args.index("--base")
    return [command, *args[:at], "--set", f"transformer.base={args[at + 1]}", *args[at + 2 :]]


@pytest.fixture(scope="module")
def ablated(tiny_base, complaints_csv, tmp_path_factory):
    output = tmp_path_factory.mktemp("ablation") / "m"
    result = runner.invoke(app, experiment_args("ablation", tiny_base, complaints_csv, output))
    assert result.exit_code == 0, result.output
    return output


def test_experiments_ablation_ships_the_product_model_and_adds_the_variants(
    ablated, tiny_transformer
):
    """The same training as `aduan train` (same choices, temperatures and thresholds), plus
    every variant on the validation rows in metrics.json and the card."""
    metrics = json.loads((ablated / "metrics.json").read_text())
    variants = metrics["validation_variants"]
    assert set(variants) == VARIANTS
    assert all(0 <= v["agency"]["macro_f1"] <= 1 for v in variants.values())
    card = (ablated / "README.md").read_text()
    assert "| tf-idf alone (baseline) |" in card and "| encoder + tf-idf |" in card
    product, experiment = read_config(tiny_transformer), read_config(ablated)
    assert experiment["epochs_selected"] == product["epochs_selected"]
    for head in ("category", "agency"):
        assert experiment["mixing"][head] == pytest.approx(product["mixing"][head])
    for key in ("temperature", "thresholds"):
        assert experiment[key] == pytest.approx(product[key]), key
    shipped = json.loads((tiny_transformer / "metrics.json").read_text())["validation"]
    assert metrics["validation"]["agency"]["accuracy"] == shipped["agency"]["accuracy"]


def test_experiments_ablate_model_dir_reproduces_the_run_from_an_old_flat_directory(
    ablated, complaints_csv, tmp_path, caplog
):
    """bench/quality.py --recompute: the directory's ablation with the current code equals
    the one its run recorded, also from a training_config.json of before the sections."""
    from aduan.training.config import dotted
    from aduan.training.experiments.ablation import ablate_model_dir

    old = tmp_path / "old"
    shutil.copytree(ablated, old)
    settings = json.loads((old / "training_config.json").read_text())
    flat = {key.rpartition(".")[2]: value for key, value in dotted(settings).items()}
    flat["ensemble_tfidf"] = flat.pop("tfidf")
    flat["mixing_objective"] = flat.pop("objective")
    flat.update(prior_correction=0.0, distill_from="", distill_weight=0.5)
    (old / "training_config.json").write_text(json.dumps(flat))
    with caplog.at_level("WARNING"):
        variants = ablate_model_dir(old, [str(complaints_csv)])
    assert "flat settings are deprecated" in caplog.text and "svm_c -> tfidf.svm_c" in caplog.text
    recorded = json.loads((ablated / "metrics.json").read_text())["validation_variants"]
    assert set(variants) == set(recorded)
    for name, figures in recorded.items():
        for head in ("agency", "category"):
            assert variants[name][head]["accuracy"] == pytest.approx(figures[head]["accuracy"])
            assert variants[name][head]["macro_f1"] == pytest.approx(figures[head]["macro_f1"])


def test_experiments_prior_search_chooses_a_correction_only_where_it_scores_better():
    from aduan.training.experiments.priors import fit_mixing_with_priors
    from aduan.training.mixing import fit_mixing, score

    rng = np.random.default_rng(0)
    y = np.array([1 if i % 10 == 0 else 0 for i in range(200)])  # a rare class, 10%
    # The rare class's rows lean towards the frequent one: only a correction gets them right.
    logits = np.where(y[:, None] == 1, [0.3, 0.0], [2.0, 0.0]) + rng.normal(0, 0.1, (200, 2))
    raw, targets = {"category": logits, "agency": logits}, {"category": y, "agency": y}
    priors = {head: np.log([0.9, 0.1]).tolist() for head in targets}
    plain = fit_mixing(raw, targets, {}, None, "metrics", 0.95)
    searched = fit_mixing_with_priors(raw, targets, {}, None, priors, "metrics", 0.95)
    assert "prior_correction" not in plain["agency"]
    assert searched["agency"]["prior_correction"] > 0

    def scored(mixing):
        return score(mix(raw, {}, mixing, None)["agency"], y, "metrics", 0.95)

    assert scored(searched) > scored(plain)
    balanced = np.where(y[:, None] == 1, [0.0, 2.0], [2.0, 0.0])  # nothing to correct
    raw = {"category": balanced, "agency": balanced}
    again = fit_mixing_with_priors(raw, targets, {}, None, priors, "metrics", 0.95)
    assert "prior_correction" not in again["agency"]


def test_experiments_distillation_learns_from_a_teacher_directory(
    tiny_base, complaints_csv, tiny_transformer, tmp_path, monkeypatch
):
    """A student learns the teacher's softened probabilities beside the labels; a teacher
    trained on other labels is refused with a message."""
    from aduan.training.experiments import distillation

    calls = []
    original = distillation.teacher_logits

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append({head: logits.shape for head, logits in out.items()})
        return out

    monkeypatch.setattr(distillation, "teacher_logits", spy)
    student = tmp_path / "student"
    args = experiment_args("distill", tiny_base, complaints_csv, student)
    result = runner.invoke(app, [*args, "--teacher", str(tiny_transformer), "--weight", "1.0"])
    assert result.exit_code == 0, result.output
    agencies = len(read_config(student)["heads"]["agency"]["id2label"])
    assert calls and calls[0]["agency"][1] == agencies
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["distillation"] == {
        "teacher": tiny_transformer.name,
        "weight": 1.0,
        "temperature": 2.0,
    }
    assert metrics["validation"]["agency"]["accuracy"] > 0.9

    other = tmp_path / "other.csv"
    frame = pd.read_csv(complaints_csv)
    frame.loc[frame["agency"] == "Dinas Sosial", "agency"] = "Dinas Kesehatan"
    frame.to_csv(other, index=False)
    refused = runner.invoke(
        app,
        [
            *experiment_args("distill", tiny_base, other, tmp_path / "s2"),
            "--teacher",
            str(tiny_transformer),
        ],
    )
    assert refused.exit_code == 2 and "agency labels differ" in refused.output
