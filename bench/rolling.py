"""Rolling-origin evaluation of the auto-route promise: does the threshold chosen on the two
months after training keep the routed complaints >= 95% accurate on the months after those?

For each origin month m (every month from `--first` to the last one with a later month):

    train on <= m  ->  choose temperature and thresholds on m+1..m+2  ->  (refit on <= m+2 when
    the preset sets `refit_all`, as it ships)  ->  measure on m+3, m+4, m+5 (each month a window)

ONE model per origin (the preset's own trainer, `steps.select` then `steps.refit`); every
threshold method is applied to the same validation and later predictions of the agency head (the
head that routes): the routed share and its accuracy per later window, pooled, and the worst
window. The "drift margin" methods learn their margin from history only: at origin m, the
largest fall of routed accuracy (validation months -> later months, at the point threshold) among
the earlier origins whose later months had all happened by the end of m+2.

    .venv/bin/python bench/rolling.py --preset baseline --first 2022-03 \
        --json bench/results/rolling.json --plot bench/results/rolling.png
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aduan.model.calibration import softmax
from aduan.model.taxonomy import Taxonomy
from aduan.training.config import load_config
from aduan.training.data import ColumnMap, Splits, load_many, prepare
from aduan.training.metrics import choose_threshold, fit_temperature
from aduan.training.train import every_row, kind_trainer, validation_logits

HEAD = "agency"  # the head whose probability decides the route (model/pipeline.py)
CHOOSE, LATER = 2, 3  # months to choose on, months measured after them

# name -> (method, level, margin: a number, or "max"/"mean" of the earlier origins' drift)
METHODS: dict[str, tuple[str, float, float | str]] = {
    "point (today)": ("point", 0.95, 0.0),
    "lcb 90%": ("lcb", 0.90, 0.0),
    "lcb 95% (new default)": ("lcb", 0.95, 0.0),
    "lcb 99%": ("lcb", 0.99, 0.0),
    "point + 1 pt": ("point", 0.95, 0.01),
    "point + 2 pt": ("point", 0.95, 0.02),
    "point + mean drift": ("point", 0.95, "mean"),
    "point + largest drift": ("point", 0.95, "max"),
    "lcb 95% + mean drift": ("lcb", 0.95, "mean"),
    "per-agency lcb 95%": ("per-agency lcb", 0.95, 0.0),
}
# Validation rows an agency needs predicted as it for a threshold of its own (per-agency).
PER_AGENCY_ROWS = 100


@dataclass
class Window:
    """One block of rows scored by an origin's model: confidence and correctness."""

    month: str
    confidence: np.ndarray
    correct: np.ndarray
    predicted: np.ndarray  # the predicted class of each row (per-agency thresholds)


@dataclass
class Origin:
    month: str
    train_rows: int
    choose: Window
    later: list[Window]
    seconds: float


def month_end(month: pd.Period) -> str:
    return str(month.to_timestamp(how="end").date())


def scored(
    logits: np.ndarray, y: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    proba = softmax(logits, temperature)
    predicted = proba.argmax(axis=1)
    return proba.max(axis=1), predicted == y, predicted


def run_origin(config: Any, frame: pd.DataFrame, taxonomy: Taxonomy, m: pd.Period) -> Origin:
    """Train at origin `m`, score the choice months and each later month."""
    started = time.perf_counter()
    splits = prepare(
        frame,
        taxonomy,
        train_until=month_end(m),
        valid_from=str((m + 1).to_timestamp().date()),
        valid_until=month_end(m + CHOOSE + LATER),
        min_agency_rows=config.min_agency_rows,
    )
    month = splits.valid["created_at"].dt.to_period("M")
    in_choice = (month <= m + CHOOSE).to_numpy()
    choose = Splits(
        splits.train,
        splits.valid[in_choice].reset_index(drop=True),
        splits.labels,
        splits.agency_map,
    )
    later_rows = splits.valid[~in_choice].reset_index(drop=True)
    index = splits.labels[HEAD].label2id
    with tempfile.TemporaryDirectory() as tmp:
        trainer = kind_trainer(config, Path(tmp))
        selection = trainer.select(choose)
        valid_logits = validation_logits(selection, choose)[HEAD]
        model = trainer.refit(selection, every_row(choose)) if config.refit_all else selection.model
        later_logits = model.logits(later_rows["text"].tolist())[HEAD]
    y_choose = np.array([index.get(v, -1) for v in choose.valid[HEAD]])
    temperature = fit_temperature(valid_logits, y_choose)
    y_later = np.array([index.get(v, -1) for v in later_rows[HEAD]])
    conf, correct, predicted = scored(later_logits, y_later, temperature)
    later_month = later_rows["created_at"].dt.to_period("M")
    windows = []
    for p in sorted(later_month.unique()):
        rows = (later_month == p).to_numpy()
        windows.append(Window(str(p), conf[rows], correct[rows], predicted[rows]))
    return Origin(
        str(m),
        len(splits.train),
        Window(f"{m + 1}..{m + CHOOSE}", *scored(valid_logits, y_choose, temperature)),
        windows,
        time.perf_counter() - started,
    )


# A threshold, or one per predicted class (-1: every class without its own).
Threshold = float | dict[int, float]


def pool(windows: list[Window]) -> Window:
    return Window(
        "pooled",
        np.concatenate([w.confidence for w in windows]),
        np.concatenate([w.correct for w in windows]),
        np.concatenate([w.predicted for w in windows]),
    )


def per_agency(window: Window, target: float, level: float, min_rows: int) -> dict[int, float]:
    """The lower-bound threshold of each predicted agency with `min_rows` validation rows
    predicted as it, fitted on those rows alone; every other agency gets the overall one."""
    out = {
        -1: choose_threshold(window.confidence, window.correct, target, method="lcb", level=level)
    }
    for label in np.unique(window.predicted):
        rows = window.predicted == label
        if rows.sum() >= min_rows:
            out[int(label)] = choose_threshold(
                window.confidence[rows], window.correct[rows], target, method="lcb", level=level
            )
    return out


def routed(window: Window, threshold: Threshold) -> dict[str, Any]:
    if isinstance(threshold, dict):
        limits = np.array([threshold.get(int(p), threshold[-1]) for p in window.predicted])
        mask = window.confidence >= limits
    else:
        mask = window.confidence >= threshold
    return {
        "rows": len(mask),
        "routed_share": float(mask.mean()) if len(mask) else 0.0,
        "routed_accuracy": float(window.correct[mask].mean()) if mask.any() else None,
        "routed_rows": int(mask.sum()),
    }


def drift(origin: Origin, target: float) -> float:
    """How far routed accuracy fell from the choice months to the later ones (pooled), at the
    point threshold: what a drift margin learns from."""
    threshold = choose_threshold(origin.choose.confidence, origin.choose.correct, target)
    pooled = pool(origin.later)
    before = routed(origin.choose, threshold)["routed_accuracy"]
    after = routed(pooled, threshold)["routed_accuracy"]
    return 0.0 if before is None or after is None else max(0.0, before - after)


def learned_margin(origins: list[Origin], at: int, target: float, how: str) -> float:
    """The largest (`how` "max") or mean drift among origins whose later months all ended by
    the end of the choice months of origin `at` (nothing from the future); 0 with no such
    history."""
    now = pd.Period(origins[at].month, "M") + CHOOSE
    seen = [
        drift(o, target)
        for o in origins[:at]
        if len(o.later) == LATER and pd.Period(o.later[-1].month, "M") <= now
    ]
    if not seen:
        return 0.0
    return max(seen) if how == "max" else float(np.mean(seen))


def evaluate(origins: list[Origin], target: float) -> dict[str, Any]:
    """Every method on every origin: thresholds, validation and later windows, the worst."""
    out: dict[str, Any] = {}
    for name, (method, level, fixed) in METHODS.items():
        rows = []
        for i, origin in enumerate(origins):
            margin = (
                fixed if isinstance(fixed, float) else learned_margin(origins, i, target, fixed)
            )
            margin = min(margin, 0.999 - target)
            threshold: Threshold
            if method.startswith("per-agency"):
                threshold = per_agency(origin.choose, target + margin, level, PER_AGENCY_ROWS)
            else:
                threshold = choose_threshold(
                    origin.choose.confidence,
                    origin.choose.correct,
                    target,
                    method=method,
                    level=level,
                    margin=margin,
                )
            later = [{"month": w.month, **routed(w, threshold)} for w in origin.later]
            pooled = pool(origin.later)
            rows.append(
                {
                    "origin": origin.month,
                    "margin": round(margin, 4),
                    "threshold": threshold,
                    "choice": routed(origin.choose, threshold),
                    "later": later,
                    "pooled": routed(pooled, threshold),
                }
            )
        out[name] = {
            "method": method,
            "confidence": level,
            "margin": fixed,
            "origins": rows,
            **summarise(rows, target),
        }
    return out


def summarise(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Over the later windows of `rows` (one method's origins): the worst routed accuracy,
    how many windows fell under `target` (a window that routes nothing does not), the routed
    shares and the pooled accuracy."""
    windows = [{"origin": r["origin"], **w} for r in rows for w in r["later"]]
    measured = [w for w in windows if w["routed_accuracy"] is not None]
    worst = min(measured, key=lambda w: w["routed_accuracy"], default=None)
    return {
        "worst_window": worst,
        "windows": len(windows),
        "windows_below_target": sum(w["routed_accuracy"] < target for w in measured),
        "windows_routing_nothing": len(windows) - len(measured),
        "mean_routed_share": float(np.mean([w["routed_share"] for w in windows])),
        "pooled_routed_share": _pooled(rows, "routed_rows") / _pooled(rows, "rows"),
        "pooled_routed_accuracy": _pooled_accuracy(rows),
    }


def _pooled(rows: list[dict[str, Any]], key: str) -> float:
    return float(sum(w[key] for r in rows for w in r["later"]))


def _pooled_accuracy(rows: list[dict[str, Any]]) -> float | None:
    hits = sum((w["routed_accuracy"] or 0.0) * w["routed_rows"] for r in rows for w in r["later"])
    n = _pooled(rows, "routed_rows")
    return hits / n if n else None


def table(results: dict[str, Any], target: float) -> str:
    lines = [
        "| method | later windows < "
        f"{target:.0%} | worst window: routed acc. (share, origin → month) | mean routed share "
        "| pooled routed acc. | windows routing nothing |",
        "|" + " --- |" * 6,
    ]
    for name, r in results.items():
        w = r["worst_window"]
        worst = (
            "–"
            if w is None
            else (
                f"{w['routed_accuracy']:.3f} ({w['routed_share']:.1%}, "
                f"{w['origin']} → {w['month']})"
            )
        )
        pooled = r["pooled_routed_accuracy"]
        lines.append(
            f"| {name} | {r['windows_below_target']} / {r['windows']} | {worst} | "
            f"{r['mean_routed_share']:.1%} | {'–' if pooled is None else f'{pooled:.3f}'} | "
            f"{r['windows_routing_nothing']} |"
        )
    return "\n".join(lines)


def per_origin(results: dict[str, Any], names: list[str]) -> str:
    lines = [
        "| origin | " + " | ".join(f"{n}: share / acc. per later month" for n in names) + " |",
        "|" + " --- |" * (len(names) + 1),
    ]
    for i, origin in enumerate(results[names[0]]["origins"]):
        cells = []
        for name in names:
            later = results[name]["origins"][i]["later"]
            cells.append(
                ", ".join(
                    f"{w['routed_share']:.0%} / "
                    + ("–" if w["routed_accuracy"] is None else f"{w['routed_accuracy']:.3f}")
                    for w in later
                )
            )
        lines.append(f"| {origin['origin']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, Any], names: list[str], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, share_ax) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for name in names:
        windows = [
            (f"{r['origin']}→{w['month'][2:]}", w)
            for r in results[name]["origins"]
            for w in r["later"]
        ]
        xs = range(len(windows))
        acc = [np.nan if w["routed_accuracy"] is None else w["routed_accuracy"] for _, w in windows]
        acc_ax.plot(xs, acc, marker="o", label=name)
        share_ax.plot(xs, [w["routed_share"] for _, w in windows], marker="o", label=name)
    acc_ax.axhline(target, color="grey", linestyle="--", label=f"promise {target:.0%}")
    acc_ax.set_ylabel("accuracy of auto-routed")
    acc_ax.legend(fontsize=8)
    share_ax.set_ylabel("auto-routed share")
    share_ax.set_xticks(list(xs), [label for label, _ in windows], rotation=90, fontsize=6)
    share_ax.set_xlabel("origin → later month")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="baseline")
    parser.add_argument("--first", default="2022-03", help="first origin month (YYYY-MM)")
    parser.add_argument("--last", help="last origin month (default: the last with a later month)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--also-from", nargs="*", default=["2022-06", "2022-09"], help="summaries of later origins"
    )
    parser.add_argument("--plot", type=Path)
    # The scored windows (confidences and hits, no text), so methods can change without
    # training again.
    parser.add_argument("--cache", type=Path, help="pickle of the scored origins: read or write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.preset)
    target = config.route_accuracy
    taxonomy = Taxonomy.load(config.taxonomy or None)
    frame = load_many(config.data, ColumnMap(**config.columns))
    newest = frame["created_at"].max().to_period("M")
    last = pd.Period(args.last, "M") if args.last else newest - CHOOSE - 1
    months = pd.period_range(pd.Period(args.first, "M"), last, freq="M")
    origins: list[Origin] = []
    if args.cache and args.cache.exists():
        cached = pickle.loads(args.cache.read_bytes())
        origins = [o for o in cached if pd.Period(o.month, "M") in months]
    done = {o.month for o in origins}
    for m in months:
        if str(m) in done:
            continue
        origin = run_origin(config, frame, taxonomy, m)
        origins.append(origin)
        print(
            f"origin {origin.month}: {origin.train_rows} training rows, "
            f"{len(origin.choose.correct)} to choose on, later months "
            f"{[w.month for w in origin.later]}, {origin.seconds:.0f} s",
            flush=True,
        )
        if args.cache:
            args.cache.write_bytes(pickle.dumps(origins))
    origins.sort(key=lambda o: o.month)
    results = evaluate(origins, target)
    print(f"\nevery origin, {origins[0].month}..{origins[-1].month}\n")
    print(table(results, target))
    subsets = {}
    for month in args.also_from:
        subsets[month] = {
            name: summarise([o for o in r["origins"] if o["origin"] >= month], target)
            for name, r in results.items()
        }
        print(f"\norigins from {month} (margins still learned from every earlier origin)\n")
        print(table(subsets[month], target))
    print("\n" + per_origin(results, ["point (today)", "lcb 95% (new default)"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "preset": args.preset,
            "head": HEAD,
            "target": target,
            "refit_all": config.refit_all,
            "origins": [
                {
                    "month": o.month,
                    "train_rows": o.train_rows,
                    "choice_rows": len(o.choose.correct),
                    "later_rows": {w.month: len(w.correct) for w in o.later},
                    "seconds": round(o.seconds, 1),
                }
                for o in origins
            ],
            "methods": results,
            "from": subsets,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    if args.plot:
        names = ["point (today)", "lcb 95% (new default)", "point + mean drift"]
        plot(results, names, target, args.plot)


if __name__ == "__main__":
    main()
