"""Drift and health of the live model: the predicted-agency distribution and the review share
of recent traffic against what the model produced on its validation months (population
stability index), the share of words it cannot read, and how often operators' feedback
disagrees with its agency.

One summary (`summarize`) serves three readers: `/metrics` (Prometheus gauges over a sliding
window of live predictions, via `DriftMonitor`), `GET /v1/admin/drift` and the web UI
(`DriftMonitor.snapshot()`), and `aduan models drift --since DATE` (`drift_report`, from the
stored requests).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import case, func, select

from aduan.model.classifier import MANY_UNKNOWN
from aduan.model.pipeline import Routed

from .storage import Feedback, Store, StoredRequest, as_utc

EPSILON = 1e-4  # share given to a label absent on one side, so the PSI stays finite
# Conventional reading of the population stability index.
PSI_LEVELS = ((0.1, "stable"), (0.25, "moderate shift"), (math.inf, "significant shift"))


def shares(labels: Iterable[str]) -> dict[str, float]:
    """Each label's share of the sequence."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    total = sum(counts.values())
    return {label: n / total for label, n in sorted(counts.items())} if total else {}


def psi(actual: dict[str, float], expected: dict[str, float], eps: float = EPSILON) -> float:
    """Population stability index: sum over labels of (a - e) * ln(a / e)."""
    total = 0.0
    for label in set(actual) | set(expected):
        a, e = max(actual.get(label, 0.0), eps), max(expected.get(label, 0.0), eps)
        total += (a - e) * math.log(a / e)
    return total


def psi_level(value: float | None) -> str | None:
    if value is None:
        return None
    return next(name for limit, name in PSI_LEVELS if value < limit)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(
    agencies: Sequence[str],
    routes: Sequence[str],
    unknown: Sequence[float | None],
    reference: dict[str, Any] | None,
) -> dict[str, Any]:
    """Predicted-agency shares and PSI, review share and unreadable-word shares of a set of
    predictions, each beside the model's training reference (None where unknown)."""
    reference = reference or {}
    window = shares(agencies)
    expected = reference.get("agency") or {}
    known = [u for u in unknown if u is not None and not math.isnan(u)]
    value = psi(window, expected) if window and expected else None
    return {
        "predictions": len(agencies),
        "agency_psi": value,
        "agency_psi_level": psi_level(value),
        "agency": {
            label: {"window": window.get(label, 0.0), "reference": expected.get(label, 0.0)}
            for label in sorted(set(window) | set(expected))
        },
        "review_share": {
            "window": _mean([r == "review" for r in routes]),
            "reference": reference.get("review_share"),
        },
        "unknown_word_share": {
            "window": _mean(known),
            "reference": reference.get("unknown_word_share"),
        },
        "many_unknown_share": {
            "window": _mean([u >= MANY_UNKNOWN for u in known]),
            "reference": reference.get("many_unknown_share"),
        },
    }


def feedback_agreement(
    store: Store, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Stored requests (received in the period) that operators corrected, and how often the
    latest correction names another agency / category than the model predicted."""
    latest = (
        select(Feedback.request_id, func.max(Feedback.id).label("fid"))
        .group_by(Feedback.request_id)
        .subquery()
    )
    query = (
        select(
            func.count(),
            func.sum(case((Feedback.agency != StoredRequest.agency, 1), else_=0)),
            func.sum(case((Feedback.category != StoredRequest.category, 1), else_=0)),
        )
        .select_from(StoredRequest)
        .join(latest, latest.c.request_id == StoredRequest.id)
        .join(Feedback, Feedback.id == latest.c.fid)
    )
    if since is not None:
        query = query.where(StoredRequest.received_at >= as_utc(since))
    if until is not None:
        query = query.where(StoredRequest.received_at < as_utc(until))
    with store.sessions() as session:
        total, agency, category = session.execute(query).one()
    total = int(total or 0)
    return {
        "feedback": total,
        "agency_disagreements": int(agency or 0),
        "agency_disagreement_rate": (int(agency or 0) / total) if total else None,
        "category_disagreement_rate": (int(category or 0) / total) if total else None,
    }


class DriftMonitor:
    """A sliding window of the live model's predictions, compared with its training reference;
    also a Prometheus collector (the gauges are computed when `/metrics` is scraped)."""

    def __init__(self, window: int = 1000, feedback_days: int = 30) -> None:
        self.window = window
        self.feedback_days = feedback_days
        self._rows: deque[tuple[str, str, float | None]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.version: str | None = None
        self.reference: dict[str, Any] | None = None
        # Set when a store is open: counts the feedback on recent requests.
        self.feedback_source: Callable[[datetime], dict[str, Any]] | None = None
        self._feedback: tuple[float, dict[str, Any] | None] = (-math.inf, None)

    def reset(self, version: str, reference: dict[str, Any] | None) -> None:
        """A new model is live: start a new window against its own reference."""
        with self._lock:
            self._rows.clear()
            self.version, self.reference = version, reference

    def observe(self, answers: Iterable[Routed]) -> None:
        with self._lock:
            for answer in answers:
                if answer.model_version != self.version:
                    continue  # answered by the model a reload just replaced
                self._rows.append(
                    (answer.prediction.best("agency").label, answer.route, answer.unknown_words)
                )

    def feedback(self, max_age: float = 30.0) -> dict[str, Any] | None:
        """Feedback agreement over the last `feedback_days` (cached `max_age` seconds)."""
        if self.feedback_source is None:
            return None
        checked, cached = self._feedback
        if time.monotonic() - checked < max_age:
            return cached
        since = datetime.now(UTC) - timedelta(days=self.feedback_days)
        try:
            cached = {"days": self.feedback_days, **self.feedback_source(since)}
        except Exception:  # a database hiccup must not break /metrics
            cached = None
        self._feedback = (time.monotonic(), cached)
        return cached

    def snapshot(self) -> dict[str, Any]:
        """The drift figures as plain data (for `/v1/admin/drift` and the web UI)."""
        with self._lock:
            rows = list(self._rows)
            version, reference = self.version, self.reference
        agencies = [r[0] for r in rows]
        summary = summarize(agencies, [r[1] for r in rows], [r[2] for r in rows], reference)
        return {
            "model_version": version,
            "window": {"size": len(rows), "capacity": self.window},
            "has_reference": bool(reference),
            **summary,
            "feedback": self.feedback(),
        }

    def describe(self) -> list[Metric]:
        return []  # computed on scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        yield _gauge(
            "aduan_drift_window_predictions",
            "Predictions in the sliding drift window",
            snap["window"]["size"],
        )
        if snap["agency_psi"] is not None:
            yield _gauge(
                "aduan_drift_agency_psi",
                "Population stability index of predicted agencies: window vs training reference",
                snap["agency_psi"],
            )
        shares_family = GaugeMetricFamily(
            "aduan_drift_agency_share",
            "Share of predicted agencies, in the window and in the training reference",
            labels=["agency", "source"],
        )
        for agency, values in snap["agency"].items():
            for source, value in values.items():
                shares_family.add_metric([agency, source], value)
        yield shares_family
        for name, help_text in (
            ("review_share", "Share of complaints routed to review"),
            ("unknown_word_share", "Mean share of words outside the model's vocabulary"),
            ("many_unknown_share", f"Share of texts with >= {MANY_UNKNOWN:.0%} unknown words"),
        ):
            family = GaugeMetricFamily(f"aduan_drift_{name}", help_text, labels=["source"])
            for source, value in snap[name].items():
                if value is not None:
                    family.add_metric([source], value)
            yield family
        feedback = snap["feedback"]
        if feedback is not None:
            yield _gauge(
                "aduan_feedback_recent_corrections",
                f"Corrected requests received in the last {feedback['days']} days",
                feedback["feedback"],
            )
            if feedback["agency_disagreement_rate"] is not None:
                yield _gauge(
                    "aduan_feedback_disagreement_rate",
                    "Share of recent corrections naming another agency than the model",
                    feedback["agency_disagreement_rate"],
                )


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def stored_predictions(
    store: Store, since: datetime, until: datetime | None = None
) -> list[tuple[datetime, str, str, str, str]]:
    """(received_at, text, agency, route, model_version) of requests stored in the period."""
    query = select(
        StoredRequest.received_at,
        StoredRequest.text,
        StoredRequest.agency,
        StoredRequest.route,
        StoredRequest.model_version,
    ).where(StoredRequest.received_at >= as_utc(since))
    if until is not None:
        query = query.where(StoredRequest.received_at < as_utc(until))
    with store.sessions() as session:
        return [
            (as_utc(r[0]), r[1], r[2], r[3], r[4])
            for r in session.execute(query.order_by(StoredRequest.received_at))
        ]


def drift_report(
    store: Store,
    model_dir: Path,
    since: datetime,
    until: datetime | None = None,
    plot: Path | None = None,
) -> dict[str, Any]:
    """What `/metrics` shows, from the requests stored since a date, against the reference of
    the model in `model_dir`: overall, per ISO week and per model version that answered."""
    from aduan.model import artifacts
    from aduan.model.classifier import ComplaintClassifier

    rows = stored_predictions(store, since, until)
    if not rows:
        raise ValueError(f"no stored requests received since {since.date()}")
    classifier = ComplaintClassifier.load(model_dir)
    metrics_path = model_dir / artifacts.METRICS
    reference = (
        (artifacts.read_json(metrics_path) or {}).get("reference")
        if metrics_path.is_file()
        else None
    )
    measured = classifier.unknown_share([r[1] for r in rows])
    unknown: list[float | None] = (
        [None] * len(rows)
        if measured is None
        else [None if math.isnan(u) else float(u) for u in measured]
    )
    weeks: dict[str, list[int]] = {}
    versions: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        year, week, _ = row[0].isocalendar()
        weeks.setdefault(f"{year}-W{week:02d}", []).append(i)
        versions.setdefault(row[4], []).append(i)

    def part(indices: list[int]) -> dict[str, Any]:
        return summarize(
            [rows[i][2] for i in indices],
            [rows[i][3] for i in indices],
            [unknown[i] for i in indices],
            reference,
        )

    report = {
        "since": since.date().isoformat(),
        "until": until.date().isoformat() if until else None,
        "reference_model": classifier.version,
        "has_reference": bool(reference),
        **part(list(range(len(rows)))),
        "feedback": feedback_agreement(store, since, until),
        "weeks": {week: _brief(part(idx)) for week, idx in sorted(weeks.items())},
        "versions": {version: _brief(part(idx)) for version, idx in sorted(versions.items())},
    }
    if plot is not None:
        report["plot"] = str(plot_drift(report, plot))
    return report


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "predictions": summary["predictions"],
        "agency_psi": summary["agency_psi"],
        "review_share": summary["review_share"]["window"],
        "unknown_word_share": summary["unknown_word_share"]["window"],
    }


def plot_drift(report: dict[str, Any], path: Path) -> Path:
    """Weekly PSI, review share and unreadable-word share, and the agency shares of the
    period beside the training reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks = list(report["weeks"])
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    series = (
        (axes[0][0], "agency_psi", "agency PSI vs training reference"),
        (axes[0][1], "review_share", "share routed to review"),
        (axes[1][0], "unknown_word_share", "share of words outside the vocabulary"),
    )
    for ax, key, title in series:
        values = [report["weeks"][w][key] for w in weeks]
        ax.plot(weeks, [math.nan if v is None else v for v in values], marker="o")
        if key == "agency_psi":  # the conventional "moderate" and "significant" lines
            for limit, _ in PSI_LEVELS[:2]:
                ax.axhline(limit, color="grey", linestyle="--", linewidth=0.8)
        elif report[key]["reference"] is not None:
            ax.axhline(
                report[key]["reference"],
                color="tab:green",
                linestyle=":",
                label="training reference",
            )
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    bars = axes[1][1]
    agencies = sorted(report["agency"], key=lambda a: -report["agency"][a]["reference"])
    positions = range(len(agencies))
    bars.barh(
        [p - 0.2 for p in positions],
        [report["agency"][a]["reference"] for a in agencies],
        0.4,
        label="training reference",
    )
    bars.barh(
        [p + 0.2 for p in positions],
        [report["agency"][a]["window"] for a in agencies],
        0.4,
        label=f"since {report['since']}",
    )
    bars.set_yticks(list(positions), [a[:30] for a in agencies], fontsize=7)
    bars.invert_yaxis()
    bars.set_title("predicted agency shares")
    bars.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
