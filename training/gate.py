"""The promotion gate: which months a candidate trains, calibrates and is judged on, the
checks a candidate must pass against the live model, and the comparison report.

The newest labelled month(s) are kept out of the candidate's training and calibration; the
candidate and the live model are both scored on them (only rows the live model never learned
from either), and the candidate is promoted when it is not worse than the live model by more
than the allowed margins on agency accuracy and macro-F1 and keeps the auto-route promise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .data import DataError
from .metrics import summary

HEAD = "agency"  # the head that routes complaints: the one the gate judges


@dataclass
class GateConfig:
    """The gate's settings; `aduan retrain --gate key=value` overrides any of them."""

    eval_months: int = 1  # newest months held out to judge candidate and live model
    min_eval_rows: int = 200  # older months join the evaluation window until it has this many
    # Months before it that calibrate the candidate; 0: the preset's `valid_months`, the same
    # count `aduan train` validates on.
    valid_months: int = 0
    min_valid_rows: int = 200
    max_accuracy_drop: float = 0.01  # candidate agency accuracy may trail the live by this
    max_macro_f1_drop: float = 0.02  # and agency macro-F1 by this
    # Auto-routed complaints must stay at least (promised accuracy - this) correct.
    route_tolerance: float = 0.02


@dataclass(frozen=True)
class Windows:
    """Training up to `train_until`, calibration `valid_from`..`valid_until`, evaluation
    `eval_from`..`eval_until` (inclusive days)."""

    train_until: str
    valid_from: str
    valid_until: str
    eval_from: str
    eval_until: str


def _take(
    counts: pd.Series, months: int, min_rows: int, window: str, option: str
) -> tuple[pd.Series, pd.Series]:
    """The newest `months` months (more while they hold fewer than `min_rows` rows), and the
    months left before them."""
    rows = 0
    for i, n in enumerate(counts.to_numpy()):
        rows += int(n)
        if i + 1 >= months and rows >= min_rows:
            return counts.iloc[: i + 1], counts.iloc[i + 1 :]
    raise DataError(
        f"not enough labelled rows for the {window} window: {rows} row(s) in "
        f"{len(counts)} month(s), {months} month(s) and {min_rows} rows needed "
        f"(--gate {option}_months=N, --gate min_{option}_rows=N)"
    )


def plan_windows(dates: pd.Series, gate: GateConfig, valid_months: int = 2) -> Windows:
    """Evaluation on the newest month(s), calibration on the months before (`gate.valid_months`,
    else `valid_months`: the preset's), training on the rest. As in `aduan train`'s split
    (`data.plan_split`), a month counts when any row is dated in it (the newest may be
    partial) and months without rows are skipped."""
    counts = dates.dt.to_period("M").value_counts().sort_index(ascending=False)
    evaluation, rest = _take(counts, gate.eval_months, gate.min_eval_rows, "evaluation", "eval")
    months = gate.valid_months or valid_months
    validation, rest = _take(rest, months, gate.min_valid_rows, "calibration", "valid")
    if rest.empty:
        raise DataError(
            "no months left to train on before the calibration and evaluation windows "
            f"(data spans {len(counts)} month(s))"
        )
    eval_from = evaluation.index[-1].start_time
    valid_from = validation.index[-1].start_time
    day = pd.Timedelta(days=1)
    return Windows(
        train_until=str((valid_from - day).date()),
        valid_from=str(valid_from.date()),
        valid_until=str((eval_from - day).date()),
        eval_from=str(eval_from.date()),
        eval_until=str(dates.max().date()),
    )


def evaluation_rows(
    frame: pd.DataFrame, windows: Windows, live_seen_until: str | None, gate: GateConfig
) -> tuple[pd.DataFrame, str]:
    """The rows both models are judged on, and the first day they may be dated.

    Rows the live model learned from (up to its `seen_until`) are left out, and so are texts
    that already appear before the window (a re-posted complaint would leak a training row).
    """
    day = frame["created_at"].dt.normalize()
    start = pd.Timestamp(windows.eval_from)
    if live_seen_until and pd.Timestamp(live_seen_until) >= start:
        start = pd.Timestamp(live_seen_until) + pd.Timedelta(days=1)
    earlier = set(frame.loc[day < pd.Timestamp(windows.eval_from), "text"])
    rows = frame[(day >= start) & ~frame["text"].isin(earlier)]
    rows = rows.sort_values("created_at", kind="stable").drop_duplicates("text")
    if len(rows) < gate.min_eval_rows:
        seen = (
            f"; the live model learned from rows up to {live_seen_until}" if live_seen_until else ""
        )
        raise DataError(
            f"only {len(rows)} labelled row(s) from {start.date()} on that neither model "
            f"learned from ({gate.min_eval_rows} needed){seen}: add a newer month's export"
        )
    return rows.reset_index(drop=True), str(start.date())


@dataclass(frozen=True)
class Check:
    """One gate criterion: the candidate's figure, what it is compared with, the lowest value
    that passes, and whether it did."""

    name: str
    candidate: float | None
    compared_with: float | None
    limit: float
    passed: bool
    note: str = ""


def _at_least(name: str, candidate: float, reference: float, drop: float, whose: str) -> Check:
    limit = reference - drop
    passed = candidate >= limit - 1e-12
    note = (
        ""
        if passed
        else (f"{name} {candidate:.3f} is more than {drop:.3f} below the {whose}'s {reference:.3f}")
    )
    return Check(name, candidate, reference, limit, passed, note)


def decide(
    candidate: dict[str, Any],
    live: dict[str, Any] | None,
    promised: float,
    gate: GateConfig,
) -> list[Check]:
    """The gate's checks on the agency head's metrics (candidate, live model or None)."""
    checks = []
    if live is not None:
        checks.append(
            _at_least(
                "agency accuracy",
                candidate["accuracy"],
                live["accuracy"],
                gate.max_accuracy_drop,
                "live model",
            )
        )
        checks.append(
            _at_least(
                "agency macro-F1",
                candidate["macro_f1"],
                live["macro_f1"],
                gate.max_macro_f1_drop,
                "live model",
            )
        )
    auto = candidate["auto_route_accuracy"]
    limit = promised - gate.route_tolerance
    if auto is None:
        checks.append(
            Check(
                "auto-route accuracy",
                None,
                promised,
                limit,
                True,
                "routes nothing automatically: every complaint goes to review",
            )
        )
    else:
        passed = auto >= limit - 1e-12
        note = (
            ""
            if passed
            else (
                f"auto-routed complaints are {auto:.3f} correct, below the promised {promised:.2f} "
                f"(tolerance {gate.route_tolerance:.3f})"
            )
        )
        checks.append(Check("auto-route accuracy", auto, promised, limit, passed, note))
    return checks


def agency_deltas(candidate: dict[str, Any], live: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per agency: support and F1/recall of both models, the largest F1 losses first."""
    if live is None:
        return []
    cand, old = candidate["per_class"], live["per_class"]
    rows = []
    for agency in sorted(set(cand) | set(old)):
        c, o = cand.get(agency, {}), old.get(agency, {})
        rows.append(
            {
                "agency": agency,
                "support": max(int(c.get("support", 0)), int(o.get("support", 0))),
                "live_f1": o.get("f1", 0.0),
                "candidate_f1": c.get("f1", 0.0),
                "delta_f1": c.get("f1", 0.0) - o.get("f1", 0.0),
                "live_recall": o.get("recall", 0.0),
                "candidate_recall": c.get("recall", 0.0),
            }
        )
    return sorted(rows, key=lambda r: (r["delta_f1"], -r["support"]))


def comparison(
    *,
    outcome: str,
    candidate: str,
    live: str | None,
    windows: Windows,
    eval_from: str,
    rows: int,
    scores: dict[str, dict[str, Any]],
    live_scores: dict[str, dict[str, Any]] | None,
    checks: list[Check],
    promised: float,
    gate: GateConfig,
) -> dict[str, Any]:
    """Everything the gate measured and decided, as written to comparison.json."""
    return {
        "outcome": outcome,
        "candidate": candidate,
        "live": live,
        "windows": asdict(windows),
        "evaluation": {"from": eval_from, "until": windows.eval_until, "rows": rows},
        "gate": asdict(gate),
        "promised_route_accuracy": promised,
        "checks": [asdict(c) for c in checks],
        "reasons": [c.note for c in checks if not c.passed],
        "figures": {
            "candidate": {head: summary(m) for head, m in scores.items()},
            "live": {head: summary(m) for head, m in live_scores.items()} if live_scores else None,
        },
        "agency_deltas": agency_deltas(scores[HEAD], live_scores[HEAD] if live_scores else None),
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def render_table(report: dict[str, Any], deltas: int = 10) -> str:
    """The short markdown summary: the checks, then the agencies that changed most."""
    live = report["live"] or "none"
    evaluation = report["evaluation"]
    lines = [
        f"# Promotion gate: {report['candidate']} vs live {live}: {report['outcome'].upper()}",
        "",
        f"Judged on {evaluation['rows']} labelled complaints from {evaluation['from']} to "
        f"{evaluation['until']} that neither model learned from.",
        "",
        "| check | candidate | live / promised | lowest passing | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in report["checks"]:
        lines.append(
            f"| {check['name']} | {_fmt(check['candidate'])} | {_fmt(check['compared_with'])} "
            f"| {_fmt(check['limit'])} | {'pass' if check['passed'] else 'FAIL'} |"
        )
    figures = report["figures"]
    lines += ["", "| head | model | accuracy | macro-F1 | auto-routed | accuracy when auto |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for head in ("agency", "category"):
        for who in ("live", "candidate"):
            if figures[who] is None:
                continue
            m = figures[who][head]
            lines.append(
                f"| {head} | {who} | {_fmt(m['accuracy'])} | {_fmt(m['macro_f1'])} | "
                f"{_fmt(m['auto_route_coverage'])} | {_fmt(m['auto_route_accuracy'])} |"
            )
    changed = [d for d in report["agency_deltas"] if abs(d["delta_f1"]) > 1e-9]
    if changed:
        lines += [
            "",
            "| agency | rows | live F1 | candidate F1 | change |",
            "| --- | --- | --- | --- | --- |",
        ]
        shown = sorted(changed, key=lambda d: -abs(d["delta_f1"]))[:deltas]
        for d in sorted(shown, key=lambda d: d["delta_f1"]):
            lines.append(
                f"| {d['agency']} | {d['support']} | {d['live_f1']:.3f} | "
                f"{d['candidate_f1']:.3f} | {d['delta_f1']:+.3f} |"
            )
    for reason in report["reasons"]:
        lines.append(f"\nRefused: {reason}.")
    return "\n".join(lines) + "\n"


def plot_comparison(report: dict[str, Any], path: Path) -> Path:
    """Headline agency figures side by side, and the per-agency F1 change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("accuracy", "macro_f1", "auto_route_coverage", "auto_route_accuracy")
    figures = report["figures"]
    deltas = report["agency_deltas"]
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(13, max(4.5, 0.3 * len(deltas) + 1.5)),
        gridspec_kw={"width_ratios": [1, 1.4]},
    )
    width = 0.38
    for offset, who in ((-width / 2, "live"), (width / 2, "candidate")):
        if figures[who] is None:
            continue
        values = [figures[who]["agency"][n] or 0.0 for n in names]
        left.bar([i + offset for i in range(len(names))], values, width, label=who)
    positions = {"agency accuracy": 0, "agency macro-F1": 1, "auto-route accuracy": 3}
    for i, check in enumerate(c for c in report["checks"] if c["name"] in positions):
        x = positions[check["name"]]
        left.hlines(
            check["limit"],
            x - 0.45,
            x + 0.45,
            colors="black",
            linestyles="--",
            label="lowest passing" if i == 0 else None,
        )
    left.set_xticks(range(len(names)), ["accuracy", "macro-F1", "auto-routed", "acc. when auto"])
    left.set_ylim(0, 1.05)
    left.set_title(f"agency head: {report['outcome']}")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    if deltas:
        right.barh(
            [d["agency"][:34] for d in deltas],
            [d["delta_f1"] for d in deltas],
            color=["tab:red" if d["delta_f1"] < 0 else "tab:green" for d in deltas],
        )
        right.axvline(0, color="black", linewidth=0.8)
        right.tick_params(axis="y", labelsize=7)
        right.set_xlabel("F1 change (candidate - live)")
    else:
        right.text(0.5, 0.5, "no live model to compare with", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(directory: Path, report: dict[str, Any]) -> dict[str, Path]:
    """comparison.json, comparison.md and comparison.png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "comparison.json",
        "table": directory / "comparison.md",
        "plot": directory / "comparison.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    paths["table"].write_text(render_table(report), encoding="utf-8")
    plot_comparison(report, paths["plot"])
    return paths
