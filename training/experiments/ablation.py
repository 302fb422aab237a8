"""The ablation of the transformer's mixture: validation figures of each component (encoder,
topic routing table, TF-IDF) and combination, with and without prior correction, on the same
rows. Each variant gets its own mixing weights, temperature and auto-route threshold, fitted on
validation like the shipped model's, so the rows of bench/quality.md compare like with like.

From a training run (`train_with_ablation`: `aduan train` plus `validation_variants` in
metrics.json, measured on the selection run's model), or from a trained directory with the
current code and no retraining (`ablate_model_dir`; a refitted directory has seen the
validation months, so its figures are optimistic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aduan.model.artifacts import TRAINING_CONFIG, read_config
from aduan.model.labels import LabelSet
from aduan.model.resources import shared_data
from aduan.model.tfidf import TfidfBackend, TfidfHeads
from aduan.model.transformer import TransformerBackend, mix
from aduan.training import distributed
from aduan.training.config import TrainConfig, config_from_file
from aduan.training.data import Splits, load_splits
from aduan.training.finetune import TransformerSelection, TransformerTrainer
from aduan.training.metrics import calibrate_head, summary
from aduan.training.mixing import ROUTED_HEADS, fit_mixing, head_targets, topic_labels
from aduan.training.provenance import SHARED, WORKDIR
from aduan.training.train import train

from .priors import PRIOR_CORRECTIONS, fit_mixing_with_priors, log_priors

log = logging.getLogger(__name__)

BASELINE = "tf-idf alone (baseline)"
ROUTING, TFIDF = "routing table", "tf-idf"
# A variant's mixing: (raw outputs, its targets, routes, TF-IDF logits) -> weights.
Mixer = Callable[[dict, dict, dict, Any], dict[str, dict[str, Any]]]


def _mixers(priors: dict[str, list[float]], target: float) -> dict[str, tuple[bool, bool, Mixer]]:
    """Variant name -> (uses the routing table, uses TF-IDF, how its weights are fitted)."""

    def nll(tau: float = 0.0) -> Mixer:
        def fitted(raw: dict, y: dict, routes: dict, tfidf: Any) -> dict[str, dict[str, Any]]:
            return fit_mixing_with_priors(raw, y, routes, tfidf, priors, "nll", target, (tau,))

        return fitted

    def metrics(searched: bool) -> Mixer:
        def fitted(raw: dict, y: dict, routes: dict, tfidf: Any) -> dict[str, dict[str, Any]]:
            if searched:
                return fit_mixing_with_priors(raw, y, routes, tfidf, priors, "metrics", target)
            return fit_mixing(raw, y, routes, tfidf, "metrics", target)

        return fitted

    both = f"encoder + {ROUTING} + {TFIDF}"
    variants: dict[str, tuple[bool, bool, Mixer]] = {
        "encoder": (False, False, nll()),
        f"encoder + {ROUTING}": (True, False, nll()),
        f"encoder + {TFIDF}": (False, True, nll()),
        both: (True, True, nll()),
    }
    for tau in PRIOR_CORRECTIONS:
        variants[f"{both}, prior correction {tau}"] = (True, True, nll(tau))
    variants[f"{both}, mixed for the metrics"] = (True, True, metrics(False))
    variants[f"{both}, mixed for the metrics, prior correction searched"] = (
        True,
        True,
        metrics(True),
    )
    return variants


@dataclass
class MixtureInputs:
    """A transformer's component outputs on the validation rows, and the targets."""

    raw: dict[str, np.ndarray]  # the network's heads
    tfidf: dict[str, np.ndarray] | None  # the TF-IDF part's logits
    routes: dict[str, np.ndarray]  # the routing table, per routed head
    targets: dict[str, dict[str, np.ndarray]]  # label ids per part ("train", "valid") and head
    labels: dict[str, LabelSet]


def mixture_inputs(model: TransformerBackend, splits: Splits, config: TrainConfig) -> MixtureInputs:
    """Run `model`'s components on `splits.valid` (the network once)."""
    labels = model.labels
    topics = None
    if "topic" in labels:
        train_topics, valid_topics, _ = topic_labels(splits, config.transformer.min_topic_rows)
        topics = (train_topics, valid_topics)
    texts = splits.valid["text"].tolist()
    return MixtureInputs(
        model.encoder_logits(texts),
        model.tfidf.logits(texts) if model.tfidf is not None else None,
        model.routes,
        head_targets(splits, labels, topics),
        labels,
    )


def variants(inputs: MixtureInputs, splits: Splits, target: float) -> dict[str, dict[str, Any]]:
    """Validation figures (`metrics.summary` per routed head) of every variant of the
    mixture, and of the TF-IDF part alone (the baseline on the same rows)."""
    raw, tfidf, targets, labels = inputs.raw, inputs.tfidf, inputs.targets, inputs.labels

    def figures(logits: dict[str, np.ndarray]) -> dict[str, Any]:
        return {
            head: summary(
                calibrate_head(
                    logits[head], splits.valid[head].tolist(), labels[head].labels, target
                ).metrics
            )
            for head in ROUTED_HEADS
        }

    out: dict[str, dict[str, Any]] = {}
    if tfidf is not None:
        out[BASELINE] = figures(tfidf)
    priors = log_priors(targets["train"], labels)
    for name, (routing, with_tfidf, fitted) in _mixers(priors, target).items():
        if (routing and not inputs.routes) or (with_tfidf and tfidf is None):
            continue
        routes = inputs.routes if routing else {}
        variant_tfidf = tfidf if with_tfidf else None
        weights = fitted(raw, targets["valid"], routes, variant_tfidf)
        out[name] = figures(mix(raw, routes, weights, variant_tfidf))
        log.info("ablation: %s done", name)
    return out


def ablation(
    model: TransformerBackend, splits: Splits, config: TrainConfig
) -> dict[str, dict[str, Any]]:
    """Every variant of `model`'s mixture on `splits.valid` (`variants`)."""
    return variants(mixture_inputs(model, splits, config), splits, config.route_accuracy)


class AblationTrainer(TransformerTrainer):
    """The transformer trainer, plus the ablation of the selection run's model (on the
    engine it ships with) in metrics.json's `validation_variants`."""

    def select(self, splits: Splits) -> TransformerSelection:
        selection = super().select(splits)
        if distributed.is_main():
            assert isinstance(selection.model, TransformerBackend)
            variants = ablation(selection.model, splits, self.config)
            selection.report["validation_variants"] = variants
        return selection


def train_with_ablation(config: TrainConfig, output: Path) -> dict[str, Any]:
    """`aduan train` of a transformer preset, with the ablation in metrics.json."""
    if config.model_kind != "transformer":
        raise ValueError(f"the ablation is of the transformer's mixture, not {config.model_kind!r}")
    return train(config, output, trainer=AblationTrainer)


def _recorded_data(model_dir: Path, model_config: dict[str, Any]) -> list[str]:
    """The data files a directory was trained on, from its provenance (portable names)."""
    roots = {SHARED: shared_data(), WORKDIR: Path.cwd()}
    files = (model_config.get("provenance") or {}).get("data") or []
    if not files:
        raise ValueError(f"{model_dir}: config.json records no data files")
    return [str(roots.get(item["root"], Path.cwd()) / item["name"]) for item in files]


def load_trained(
    model_dir: Path, data: list[str] | None = None
) -> tuple[TransformerBackend, Splits, TrainConfig]:
    """A trained transformer directory, its split (from its recorded settings, flat or
    sectioned) and those settings; `data` names the files when the recorded names do not find
    them (files outside the shared data folder and the working directory are recorded by name
    alone)."""
    model_config = read_config(model_dir)
    if model_config.get("model_type") != TransformerBackend.model_type:
        raise ValueError(f"{model_dir}: not a transformer model directory")
    config = config_from_file(model_dir / TRAINING_CONFIG)
    config.data = data or _recorded_data(model_dir, model_config)
    splits, _ = load_splits(config)
    model = TransformerBackend.load(model_dir, model_config)
    if model.tfidf is None and config.mixing.tfidf:  # weighted 0: still the baseline row
        model.tfidf = TfidfBackend(TfidfHeads.load(model_dir), model.labels)
    return model, splits, config


def ablate_model_dir(model_dir: Path, data: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ablation of a trained transformer directory on its own split, with the current
    code and no retraining (`load_trained`)."""
    return ablation(*load_trained(model_dir, data))
