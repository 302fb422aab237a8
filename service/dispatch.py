"""The outbox dispatcher: delivers follow-up events to the offices' webhooks, at least once,
signed per Standard Webhooks (`webhook-id` = the event id, the same on every attempt).

Each round claims the due events with a lease (PostgreSQL: `SELECT ... FOR UPDATE SKIP
LOCKED`, so dispatchers in several pods never claim the same event; SQLite: one atomic
`UPDATE ... WHERE claimed_until < now`), POSTs them in parallel, renews the lease while any
is in flight, and records each outcome as it comes in: a 2xx is delivered; anything else is
retried after an exponential backoff with jitter (1 s, 2 s, 4 s ... capped), and
dead-lettered after `max_attempts`. A dispatcher that dies mid-delivery stops renewing and
leaves its claims to expire; another takes them then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from .followup import OutboxEvent, overdue_by_office, sweep
from .offices import OfficeBook
from .route_accuracy import LiveAccuracyMetrics, live_accuracy
from .storage import Store, utcnow

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = "aduan-webhooks/1"


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher works; the service fills it from `Settings`."""

    batch: int = 50
    timeout_s: float = 10.0
    lease_s: float = 30.0  # renewed every third of it while a round's POSTs are in flight
    max_attempts: int = 20
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    workers: int = 4

    @classmethod
    def of(cls, settings: Settings) -> DispatchSettings:
        """The service's webhook settings; a lease outlives one POST's timeouts."""
        return cls(
            timeout_s=settings.webhook_timeout_s,
            lease_s=2 * settings.webhook_timeout_s + 10,
            max_attempts=settings.webhook_max_attempts,
            backoff_base_s=settings.webhook_backoff_s,
            backoff_cap_s=settings.webhook_backoff_cap_s,
        )


def backoff(attempts: int, base: float, cap: float, rng: Callable[[], float] = random.random):
    """The wait after `attempts` failed attempts: base * 2^(attempts-1), capped, with jitter
    (50-100% of it), so retries of many events do not arrive together."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * (0.5 + 0.5 * rng())


@dataclass
class Outcome:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    claimed: list[str] = field(default_factory=list)


class DispatchMetrics:
    """The dispatcher's Prometheus figures (registered in the service's registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.delivered = Counter(
            "aduan_webhook_delivered_total", "Events delivered", ["type"], registry=registry
        )
        self.failed = Counter(
            "aduan_webhook_failed_total", "Failed delivery attempts", ["office"], registry=registry
        )
        self.dead = Counter(
            "aduan_webhook_dead_total", "Events dead-lettered", ["office"], registry=registry
        )
        self.pending = Gauge(
            "aduan_webhook_pending", "Events waiting for delivery", registry=registry
        )
        self.dead_letters = Gauge(
            "aduan_webhook_dead_letters", "Events in the dead-letter", registry=registry
        )
        self.live = LiveAccuracyMetrics(registry)
        self.overdue = Gauge(
            "aduan_overdue_complaints",
            "Complaints past their deadline, per office",
            ["office"],
            registry=registry,
        )


class Dispatcher:
    """One dispatcher (one per service pod, or `aduan followup dispatch`)."""

    def __init__(
        self,
        store: Store,
        book: OfficeBook,
        settings: DispatchSettings | None = None,
        *,
        name: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        client: httpx.Client | None = None,
        metrics: DispatchMetrics | None = None,
    ) -> None:
        self.store, self.book = store, book
        self.settings = settings or DispatchSettings()
        self.name = name or f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.client = client or httpx.Client(
            timeout=self.settings.timeout_s, headers={"user-agent": USER_AGENT}
        )
        self.metrics = metrics

    def close(self) -> None:
        self.client.close()

    def claim(self, now: datetime | None = None) -> list[OutboxEvent]:
        """Claim up to `batch` due events for `lease_s` (one transaction) and return them."""
        now = now or self.clock()
        token = f"{self.name}:{uuid.uuid4().hex[:12]}"
        until = now + timedelta(seconds=self.settings.lease_s)
        o = OutboxEvent
        due = (
            o.delivered_at.is_(None),
            o.dead_at.is_(None),
            o.next_attempt_at <= now,
            or_(o.claimed_until.is_(None), o.claimed_until < now),
        )
        pick = select(o.id).where(*due).order_by(o.next_attempt_at, o.id).limit(self.settings.batch)
        with self.store.sessions.begin() as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            if postgres:
                ids = list(session.scalars(pick.with_for_update(skip_locked=True)))
                if not ids:
                    return []
                claim = update(o).where(o.id.in_(ids))
            else:
                # One statement: SQLite runs writers one at a time, so two dispatchers'
                # claims never overlap; the conditions are checked again inside it.
                claim = update(o).where(o.id.in_(pick.scalar_subquery()), *due)
            session.execute(
                claim.values(claimed_by=token, claimed_until=until),
                execution_options={"synchronize_session": False},
            )
        with self.store.sessions.begin() as session:
            return list(session.scalars(select(o).where(o.claimed_by == token).order_by(o.id)))

    def sign(self, event: OutboxEvent, body: str, now: datetime) -> dict[str, str] | None:
        office = self.book.get(event.office)
        if office is None or not office.webhook:
            return None
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if office.secret:
            headers["webhook-signature"] = Webhook(office.secret).sign(event.id, now, body)
        return headers

    def deliver(self, event: OutboxEvent) -> str | None:
        """POST one event; None when the office took it (2xx), else why not."""
        office = self.book.get(event.office)
        if office is None or not office.webhook:
            return f"office {event.office!r} has no webhook (any more)"
        now = self.clock()
        body = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False)
        headers = self.sign(event, body, now)
        assert headers is not None
        try:
            response = self.client.post(office.webhook, content=body.encode(), headers=headers)
        except Exception as exc:
            # Not only httpx.HTTPError: a URL httpx cannot use raises InvalidURL or
            # UnicodeError (IDNA). Raised, it would fail the whole round unrecorded and the
            # batch would be claimed again forever; as a failure it backs off and dead-letters.
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def record(
        self, session: Session, event: OutboxEvent, error: str | None, outcome: Outcome
    ) -> None:
        """Write one delivery's outcome in `session` (a transaction of its own)."""
        now = self.clock()
        o = OutboxEvent
        if error is None:
            # Delivered, whoever holds the claim now (a late delivery after the lease ran
            # out still counts; the other dispatcher's copy carries the same webhook-id).
            session.execute(
                update(o)
                .where(o.id == event.id, o.delivered_at.is_(None))
                .values(
                    delivered_at=now,
                    attempts=o.attempts + 1,
                    claimed_by=None,
                    claimed_until=None,
                    last_error=None,
                )
            )
            outcome.delivered += 1
            if self.metrics:
                self.metrics.delivered.labels(event.type).inc()
            return
        attempts = event.attempts + 1
        dead = attempts >= self.settings.max_attempts
        wait = backoff(attempts, self.settings.backoff_base_s, self.settings.backoff_cap_s)
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_error": error,
            "claimed_by": None,
            "claimed_until": None,
            "next_attempt_at": now + timedelta(seconds=wait),
        }
        if dead:
            values["dead_at"] = now
        session.execute(
            update(o)
            .where(o.id == event.id, o.claimed_by == event.claimed_by)
            .where(o.delivered_at.is_(None))
            .values(**values)
        )
        if dead:
            outcome.dead += 1
            log.error(
                "webhook event %s for %s dead after %d attempts: %s",
                event.id,
                event.office,
                attempts,
                error,
            )
        else:
            outcome.failed += 1
            log.warning(
                "webhook event %s for %s failed (attempt %d, next in %.1f s): %s",
                event.id,
                event.office,
                attempts,
                wait,
                error,
            )
        if self.metrics:
            (self.metrics.dead if dead else self.metrics.failed).labels(event.office).inc()

    def run_once(self) -> Outcome:
        """One round: claim what is due, deliver it in parallel, record each outcome."""
        outcome = Outcome()
        events = self.claim()
        outcome.claimed = [e.id for e in events]
        if events:
            self._deliver_all(events, outcome)
        self.update_gauges()
        return outcome

    def _deliver_all(self, events: list[OutboxEvent], outcome: Outcome) -> None:
        """POST the claimed events in parallel and record each outcome as soon as it is in,
        in its own transaction; while any is still in flight, renew the round's lease every
        third of it. A slow or black-holed office may hold a worker for several timeouts
        (httpx's timeout is per connect, write and read), so a round can last far longer
        than one lease: unrenewed, other dispatchers would claim and POST the events again,
        also those already delivered but not yet recorded."""
        token = events[0].claimed_by
        assert token is not None
        every = self.settings.lease_s / 3
        workers = min(self.settings.workers, len(events))
        with ThreadPoolExecutor(workers, thread_name_prefix="webhook") as pool:
            pending = {pool.submit(self.deliver, event): event for event in events}
            renewed = time.monotonic()
            while pending:
                left = max(0.0, renewed + every - time.monotonic())
                done, _ = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                for future in done:
                    event = pending.pop(future)
                    try:
                        error = future.result()
                    except Exception as exc:  # signing, say: this event's failure only
                        error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    with self.store.sessions.begin() as session:
                        self.record(session, event, error, outcome)
                if pending and time.monotonic() - renewed >= every:
                    self.renew(token)
                    renewed = time.monotonic()

    def renew(self, token: str) -> int:
        """Extend the lease of the events claimed under `token` not recorded yet (recorded
        ones are no longer claimed); how many. A lease another took over is not touched."""
        until = self.clock() + timedelta(seconds=self.settings.lease_s)
        o = OutboxEvent
        try:
            with self.store.sessions.begin() as session:
                result = session.execute(
                    update(o)
                    .where(o.claimed_by == token, o.delivered_at.is_(None), o.dead_at.is_(None))
                    .values(claimed_until=until),
                    execution_options={"synchronize_session": False},
                )
        except SQLAlchemyError:
            # The database away: the deliveries go on; their outcomes are recorded if it
            # comes back, and the events are claimed again after the lease if not.
            log.warning("could not renew the webhook lease %s", token, exc_info=True)
            return 0
        return int(getattr(result, "rowcount", 0) or 0)

    def update_gauges(self) -> None:
        if self.metrics is None:
            return
        o = OutboxEvent
        with self.store.sessions.begin() as session:
            pending = session.scalar(
                select(func.count()).where(o.delivered_at.is_(None), o.dead_at.is_(None))
            )
            dead = session.scalar(select(func.count()).where(o.dead_at.is_not(None)))
        self.metrics.pending.set(int(pending or 0))
        self.metrics.dead_letters.set(int(dead or 0))


def dead_letters(store: Store, limit: int = 100) -> list[OutboxEvent]:
    """The events given up on, newest first (the workbench shows them)."""
    o = OutboxEvent
    query = select(o).where(o.dead_at.is_not(None)).order_by(o.dead_at.desc()).limit(limit)
    with store.sessions.begin() as session:
        return list(session.scalars(query))


def redeliver(store: Store, event_id: str, now: datetime | None = None) -> bool:
    """Put a dead-lettered event back in the queue (same id, attempts from zero)."""
    o = OutboxEvent
    with store.sessions.begin() as session:
        result = session.execute(
            update(o)
            .where(o.id == event_id, o.dead_at.is_not(None))
            .values(dead_at=None, attempts=0, next_attempt_at=now or utcnow(), last_error=None)
        )
        return bool(getattr(result, "rowcount", 0))


def overdue_gauge(store: Store, metrics: DispatchMetrics) -> None:
    """Set the per-office overdue gauge from the database (offices at zero stay listed)."""
    counts = overdue_by_office(store)
    for labels in list(metrics.overdue._metrics):  # offices no longer overdue drop to 0
        metrics.overdue.labels(*labels).set(0)
    for office, count in counts.items():
        metrics.overdue.labels(office).set(count)


async def followup_loop(
    dispatcher: Dispatcher,
    interval_s: float,
    sweep_interval_s: float,
    accuracy_days: float = 30.0,
) -> None:
    """The service's background task: a dispatch round every `interval_s`, a sweep (and the
    overdue and live-accuracy gauges) every `sweep_interval_s`. A round that fails (the
    database away) is logged and tried again."""
    store, book = dispatcher.store, dispatcher.book
    last_sweep = float("-inf")
    loop = asyncio.get_running_loop()
    while True:
        try:
            if loop.time() - last_sweep >= sweep_interval_s:
                last_sweep = loop.time()
                marked = await asyncio.to_thread(sweep, store, book)
                if marked:
                    log.warning("%d complaint(s) became overdue", len(marked))
                if dispatcher.metrics is not None:
                    await asyncio.to_thread(overdue_gauge, store, dispatcher.metrics)
                    rows = await asyncio.to_thread(live_accuracy, store, accuracy_days)
                    dispatcher.metrics.live.update(rows)
            outcome = await asyncio.to_thread(dispatcher.run_once)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("follow-up round failed; trying again")
            outcome = Outcome()
        # A full batch means more waits: go again at once.
        if len(outcome.claimed) < dispatcher.settings.batch:
            await asyncio.sleep(interval_s)
