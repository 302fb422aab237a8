"""The live accuracy of automatic routes: of the complaints the model routed by itself, the
share their office accepted (acted on) rather than sent back, per agency, with a Wilson
interval, against the promise the auto-route threshold makes (95%). The review queue never
gives this: it sees only what the model was unsure of."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import func, select

from .followup import ACCEPTED, SENT_BACK, FollowUp
from .storage import Store, utcnow

log = logging.getLogger(__name__)

PROMISE = 0.95
MIN_VERDICTS = 20  # fewer say nothing either way
ALL = "(all)"


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    denominator = 1 + z * z / total
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


@dataclass(frozen=True)
class LiveAccuracy:
    agency: str
    accepted: int
    returned: int

    @property
    def total(self) -> int:
        return self.accepted + self.returned

    @property
    def accuracy(self) -> float | None:
        return self.accepted / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.accepted, self.total)

    @property
    def below_promise(self) -> bool:
        """Enough verdicts, and the accuracy under the promise."""
        accuracy = self.accuracy
        return self.total >= MIN_VERDICTS and accuracy is not None and accuracy < PROMISE

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "agency": self.agency,
            "accepted": self.accepted,
            "returned": self.returned,
            "total": self.total,
            "accuracy": self.accuracy,
            "low": low,
            "high": high,
            "below_promise": self.below_promise,
        }


def live_accuracy(
    store: Store, days: float = 30.0, now: datetime | None = None
) -> list[LiveAccuracy]:
    """Per agency (and `(all)` first), the offices' verdicts on automatic routes judged in the
    last `days` days."""
    since = (now or utcnow()) - timedelta(days=days)
    f = FollowUp
    query = (
        select(f.auto_agency, f.verdict, func.count())
        .where(f.verdict.is_not(None), f.verdict_at >= since)
        .group_by(f.auto_agency, f.verdict)
    )
    counts: dict[str, dict[str, int]] = {}
    with store.sessions.begin() as session:
        for agency, verdict, count in session.execute(query).tuples():
            counts.setdefault(str(agency), {})[str(verdict)] = int(count)
    rows = [
        LiveAccuracy(agency, c.get(ACCEPTED, 0), c.get(SENT_BACK, 0))
        for agency, c in sorted(counts.items())
    ]
    overall = LiveAccuracy(ALL, sum(r.accepted for r in rows), sum(r.returned for r in rows))
    return [overall, *rows]


class LiveAccuracyMetrics:
    """`aduan_auto_route_live_accuracy{agency}` and its interval, and whether it is below the
    promise; the follow-up loop refreshes them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["agency"]
        self.accuracy = Gauge(
            "aduan_auto_route_live_accuracy",
            "Share of automatic routes their office accepted (not sent back), over the window",
            labels,
            registry=registry,
        )
        self.low = Gauge(
            "aduan_auto_route_live_accuracy_low",
            "Its 95% Wilson lower bound",
            labels,
            registry=registry,
        )
        self.verdicts = Gauge(
            "aduan_auto_route_verdicts",
            "Offices' verdicts on automatic routes in the window",
            labels,
            registry=registry,
        )
        self.below = Gauge(
            "aduan_auto_route_below_promise",
            "1 when the live accuracy of automatic routes is under the 95% promise",
            labels,
            registry=registry,
        )
        self._warned: set[str] = set()

    def update(self, rows: list[LiveAccuracy]) -> None:
        for row in rows:
            self.verdicts.labels(row.agency).set(row.total)
            if row.accuracy is None:
                continue
            self.accuracy.labels(row.agency).set(row.accuracy)
            self.low.labels(row.agency).set(row.interval[0])
            self.below.labels(row.agency).set(1 if row.below_promise else 0)
            if row.below_promise and row.agency not in self._warned:
                log.warning(
                    "automatic routes to %s: %.1f%% accepted by the offices (%d verdicts, "
                    "95%% interval %.1f-%.1f%%), under the %.0f%% promise: raise the "
                    "auto-route threshold or retrain",
                    row.agency,
                    100 * row.accuracy,
                    row.total,
                    100 * row.interval[0],
                    100 * row.interval[1],
                    100 * PROMISE,
                )
                self._warned.add(row.agency)
            elif not row.below_promise:
                self._warned.discard(row.agency)
