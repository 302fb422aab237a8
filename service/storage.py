"""Stored requests and operator feedback: SQLAlchemy 2, SQLite by default, PostgreSQL by URL.

Every write commits before the caller answers, so a request that got a 2xx survives a crash.
The schema is managed by Alembic (`service/migrations`), applied at start-up or with
`aduan db upgrade`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    column,
    create_engine,
    delete,
    event,
    func,
    select,
    table,
)
from sqlalchemy import text as sql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .database import DatabasePool, Deadline

log = logging.getLogger(__name__)
R = TypeVar("R")
CONNECT_TIMEOUT_S = 5
# Alembic finds the migration scripts as package resources (a wheel install has no checkout).
MIGRATIONS = "aduan.service:migrations"


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; everything is stored in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class StoredRequest(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    client_id: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    media_url: Mapped[str | None] = mapped_column(Text)
    service_code: Mapped[str | None] = mapped_column(String(50))
    category: Mapped[str] = mapped_column(String(100))
    category_score: Mapped[float] = mapped_column(Float)
    agency: Mapped[str] = mapped_column(String(200))
    agency_score: Mapped[float] = mapped_column(Float)
    kelurahan: Mapped[str | None] = mapped_column(String(100))
    kecamatan: Mapped[str | None] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    route: Mapped[str] = mapped_column(String(10))
    # Added by migration 0002: why the route, the unit's evidence, the ranked labels, and the
    # operators' review (status, public note, corrected labels; every change in request_events).
    route_reason: Mapped[str | None] = mapped_column(String(30))
    unit_source: Mapped[str | None] = mapped_column(String(20))
    unit_confidence: Mapped[float | None] = mapped_column(Float)
    predictions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="open", server_default="open")
    note: Mapped[str | None] = mapped_column(Text)
    expected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    corrected_category: Mapped[str | None] = mapped_column(String(100))
    corrected_agency: Mapped[str | None] = mapped_column(String(200))
    corrected_by: Mapped[str | None] = mapped_column(String(200))
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Added by migration 0003: `<digest of caller and Idempotency-Key>:<item>`, unique.
    idempotency_key: Mapped[str | None] = mapped_column(String(80), unique=True)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("request_id", "operator", name="uq_feedback_operator"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    category: Mapped[str] = mapped_column(String(100))
    agency: Mapped[str] = mapped_column(String(200))
    operator: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RequestEvent(Base):
    """The audit trail: one row per changed field, appended, never updated (a database trigger
    refuses UPDATE); deleted only with its request by the retention purge."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    field: Mapped[str] = mapped_column(String(40))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)


class OperatorSession(Base):
    """A workbench session (migration 0004): `id` is the SHA-256 of the cookie's random token,
    `key_check` an HMAC of the operator key's hash keyed with that token (so the session
    ends when the key is revoked, and the table holds nothing about the key by itself)."""

    __tablename__ = "operator_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String(200))
    key_check: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


@dataclass(frozen=True)
class NewRequest:
    """What the service knows about one classified item when it stores it."""

    text: str
    category: str
    category_score: float
    agency: str
    agency_score: float
    model_version: str
    route: str
    client_id: str | None = None
    address: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    media_url: str | None = None
    service_code: str | None = None
    kelurahan: str | None = None
    kecamatan: str | None = None
    route_reason: str | None = None
    unit_source: str | None = None
    unit_confidence: float | None = None
    predictions: dict[str, Any] | None = None
    idempotency_key: str | None = None


def database_url(url: str, data_dir: Path) -> str:
    """The configured URL, or an SQLite file in `data_dir`."""
    if url:
        return url
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'aduan.db').resolve()}"


# A PostgreSQL peer that vanished (no answer, no reset) is noticed by the kernel within
# about 15 s: keepalive probes on an idle connection, tcp_user_timeout on unacknowledged data.
POSTGRES_TCP = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # ms
}


def make_engine(url: str, statement_timeout_s: float | None = None) -> Engine:
    """An engine for `url`; with `statement_timeout_s`, PostgreSQL ends any statement (or
    idle transaction) that runs longer, on the server's side. Migrations run without one."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # hide_parameters: an error message never carries the values of a query (complaint
    # texts, addresses), wherever it is logged.
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Deleted rows (the retention purge, a replaced note) are overwritten with zeros,
            # not left readable in free pages of the file.
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()

        return engine
    # A database that stops answering fails a request within seconds (503), never hangs it.
    psycopg = "psycopg" in url
    connect = {"connect_timeout": CONNECT_TIMEOUT_S, **POSTGRES_TCP} if psycopg else {}
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=CONNECT_TIMEOUT_S,
        hide_parameters=True,
        connect_args=connect,
    )
    if psycopg and statement_timeout_s:
        milliseconds = int(statement_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _timeouts(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET statement_timeout = {milliseconds}")
            cursor.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")
            cursor.close()
            dbapi_connection.commit()  # SET is transactional: a rollback would undo it

    return engine


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision` (default: all of them)."""
    _migrate(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    """Undo the Alembic migrations above `revision`."""
    _migrate(url, "downgrade", revision)


# PostgreSQL advisory lock key held while migrating: replicas of the service starting together
# (a Kubernetes Deployment) migrate one after the other; the later ones find the schema at head.
MIGRATION_LOCK = 0x616475616E  # "aduan"


def _migrate(url: str, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    engine = make_engine(url)
    config.attributes["engine"] = engine
    try:
        with engine.connect() as lock:
            postgres = lock.dialect.name == "postgresql"
            key = {"key": MIGRATION_LOCK}
            if postgres:
                lock.execute(sql("SELECT pg_advisory_lock(:key)"), key)
            try:
                getattr(command, direction)(config, revision)
            finally:
                if postgres:
                    lock.execute(sql("SELECT pg_advisory_unlock(:key)"), key)
    finally:
        engine.dispose()


class Store:
    """Persistence operations; each method is one committed transaction. With `deadline_s`
    (the service's store) every operation must end within it or its connection is cut
    (`database.Deadline`), and `run` calls them from the event loop in `threads` threads of
    their own (`database.DatabasePool`)."""

    def __init__(self, engine: Engine, deadline_s: float | None = None, threads: int = 4) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.deadline = Deadline(engine, deadline_s) if deadline_s else None
        self.pool = DatabasePool(threads, deadline_s or CONNECT_TIMEOUT_S)
        # Whether the database answered the last check or request; readiness shows it.
        self.available = True
        self.last_error: str | None = None
        self.unavailable_since: float | None = None
        # Called in the transaction that routes a complaint (stored with route auto, or
        # confirmed or corrected by an operator): (session, request, actor). The follow-up
        # (`service/followup.py`) gives it to its office and queues its event there.
        self.on_routed: list[Callable[[Session, StoredRequest, str], None]] = []

    def routed(self, session: Session, row: StoredRequest, actor: str) -> None:
        """Run the `on_routed` hooks for `row` inside `session`'s transaction."""
        for hook in self.on_routed:
            hook(session, row, actor)

    def mark_unavailable(self, error: str) -> None:
        if self.available:
            log.error("database unavailable: %s", error)
            self.unavailable_since = time.monotonic()
        self.available, self.last_error = False, error

    def ping(self) -> bool:
        """Check the database and update `available` (recovery is logged with how long it
        was away): a read while all is well; after a failure also a write that changes
        nothing, because a full disk still answers reads."""
        try:
            with self._deadline(), self.engine.begin() as connection:
                connection.execute(select(1))
                if not self.available:
                    connection.execute(sql("UPDATE alembic_version SET version_num = version_num"))
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            first = (str(cause).strip().splitlines() or [""])[0]
            self.mark_unavailable(f"{type(cause).__name__}: {first}")
            return False
        if not self.available:
            down = time.monotonic() - (self.unavailable_since or time.monotonic())
            log.warning("database available again after %.1f s", down)
        self.available, self.last_error, self.unavailable_since = True, None, None
        return True

    def _deadline(self) -> AbstractContextManager[None]:
        return self.deadline.guard() if self.deadline else nullcontext()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._deadline(), self.sessions.begin() as session:
            yield session

    async def run(self, work: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """`work(*args, **kwargs)` (a method of this store, or a function given it) from the
        event loop, in the database's own threads; see `database.DatabasePool`."""
        return await self.pool.run(work, *args, **kwargs)

    def close(self) -> None:
        self.pool.close()
        if self.deadline is not None:
            self.deadline.close()
        self.engine.dispose()

    def save_requests(self, items: Sequence[NewRequest]) -> list[str]:
        received = utcnow()
        # One microsecond apart, so a batch keeps its order in the queue (sorted by time, id).
        rows = [
            StoredRequest(
                id=str(uuid.uuid4()), received_at=received + timedelta(microseconds=i), **vars(item)
            )
            for i, item in enumerate(items)
        ]
        with self._session() as session:
            session.add_all(rows)
            if self.on_routed:
                session.flush()
                for row in rows:
                    if row.route == "auto":
                        self.routed(session, row, "auto-route")  # followup.AUTO_ACTOR
        return [row.id for row in rows]

    def by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, StoredRequest]:
        """The stored requests whose idempotency key is among `keys`, by key."""
        query = select(StoredRequest).where(StoredRequest.idempotency_key.in_(list(keys)))
        with self._session() as session:
            return {str(row.idempotency_key): row for row in session.scalars(query)}

    def get_request(self, request_id: str) -> StoredRequest | None:
        with self._session() as session:
            return session.get(StoredRequest, request_id)

    def add_feedback(
        self, request_id: str, *, category: str, agency: str, operator: str
    ) -> tuple[Feedback, bool] | None:
        """Record an operator's correction; returns (feedback, created) or None (no request).

        The same operator correcting the same request again replaces their earlier labels in
        `feedback`; the request's corrected labels are the latest correction by anyone, and
        every change is appended to `request_events`.
        """
        with self._session() as session:
            row = session.get(StoredRequest, request_id)
            if row is None:
                return None
            feedback, created, _ = record_correction(
                session, row, category, agency, operator, utcnow()
            )
            self.routed(session, row, operator)
            return feedback, created

    def corrected(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Stored requests with their latest correction, in the training file's columns."""
        query = (
            select(StoredRequest)
            .where(StoredRequest.corrected_agency.is_not(None))
            .order_by(StoredRequest.received_at, StoredRequest.id)
        )
        if since is not None:
            query = query.where(StoredRequest.received_at >= as_utc(since))
        with self._session() as session:
            return [
                {
                    "id": req.id,
                    "text": req.text,
                    "address": req.address or "",
                    "kelurahan": req.kelurahan or "",
                    "kecamatan": req.kecamatan or "",
                    "created_at": as_utc(req.received_at).isoformat(),
                    "topic": "",
                    "category": req.corrected_category,
                    "agency": req.corrected_agency,
                    "predicted_agency": req.agency,
                    "operator": req.corrected_by,
                }
                for req in session.scalars(query)
            ]

    def purge(self, before: datetime) -> int:
        """Delete requests received before `before` (any zone; naive means UTC), with their
        feedback, audit events, follow-up and webhook events; returns the count. Under
        SQLite the deleted texts are zeroed in the file (`secure_delete`) and the write-ahead
        log, which still holds their earlier pages, is checkpointed and truncated."""
        # SQLite compares the stored UTC text with the bound's text: it must be UTC too, or
        # 17:00+07:00 would be read as 17:00 UTC.
        before = as_utc(before)
        with self._session() as session:
            old = select(StoredRequest.id).where(StoredRequest.received_at < before)
            session.execute(delete(Feedback).where(Feedback.request_id.in_(old)))
            session.execute(delete(RequestEvent).where(RequestEvent.request_id.in_(old)))
            # The follow-up's rows (migration 0005): the outbox's payloads carry the texts.
            for name in ("outbox", "followups"):
                follow = table(name, column("request_id"))
                session.execute(delete(follow).where(follow.c.request_id.in_(old)))
            result = session.execute(
                delete(StoredRequest).where(StoredRequest.received_at < before)
            )
            deleted = int(getattr(result, "rowcount", 0) or 0)
        if self.engine.dialect.name == "sqlite":
            self._truncate_wal()
        return deleted

    def _truncate_wal(self) -> None:
        with self.engine.connect() as connection:
            busy = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").scalar()
        if busy:
            log.warning(
                "the write-ahead log could not be truncated (another connection is reading): "
                "purged texts stay in it until the next checkpoint"
            )

    def add_session(self, row: OperatorSession) -> None:
        """Store a new workbench session, forgetting the expired ones on the way."""
        with self._session() as session:
            session.execute(delete(OperatorSession).where(OperatorSession.expires_at < utcnow()))
            session.add(row)

    def get_session(self, session_id: str) -> OperatorSession | None:
        """The unexpired session stored under `session_id`, or None."""
        with self._session() as session:
            row = session.get(OperatorSession, session_id)
            if row is None or as_utc(row.expires_at) <= utcnow():
                return None
            return row

    def end_session(self, session_id: str) -> None:
        with self._session() as session:
            session.execute(delete(OperatorSession).where(OperatorSession.id == session_id))

    def counts(self) -> dict[str, int]:
        with self._session() as session:
            return {
                "requests": int(session.scalar(select(func.count(StoredRequest.id))) or 0),
                "feedback": int(session.scalar(select(func.count(Feedback.id))) or 0),
            }


def audit(
    session: Session,
    row: StoredRequest,
    actor: str,
    at: datetime,
    changes: dict[str, tuple[str | None, str | None]],
) -> list[RequestEvent]:
    """Append one event per changed field (old value, new value) and stamp the request."""
    events = [
        RequestEvent(
            request_id=row.id, at=at, actor=actor, field=name, old_value=old, new_value=new
        )
        for name, (old, new) in changes.items()
        if old != new
    ]
    if events:
        session.add_all(events)
        row.updated_at = at
    return events


def record_correction(
    session: Session, row: StoredRequest, category: str, agency: str, operator: str, at: datetime
) -> tuple[Feedback, bool, list[RequestEvent]]:
    """An operator's corrected labels: their `feedback` row (one per operator, replaced), the
    request's current corrected labels and the audit events. Returns (feedback, created,
    events)."""
    events = audit(
        session,
        row,
        operator,
        at,
        {
            "corrected_category": (row.corrected_category, category),
            "corrected_agency": (row.corrected_agency, agency),
        },
    )
    row.corrected_category, row.corrected_agency = category, agency
    row.corrected_by, row.corrected_at = operator, at
    existing = session.scalars(
        select(Feedback).where(Feedback.request_id == row.id, Feedback.operator == operator)
    ).first()
    if existing is not None:
        existing.category, existing.agency = category, agency
        return existing, False, events
    feedback = Feedback(
        request_id=row.id, category=category, agency=agency, operator=operator, created_at=at
    )
    session.add(feedback)
    session.flush()  # assigns feedback.id before the caller answers
    return feedback, True, events


def open_store(settings: Any, migrate: bool = True, serving: bool = False) -> Store:
    """Open the configured database, applying migrations first. The service's store
    (`serving`) bounds every call by `db_timeout_s`; the command line's does not (a purge
    of many rows may take long)."""
    url = database_url(settings.database_url, settings.data_dir)
    if migrate:
        upgrade(url)
    if not serving:
        return Store(make_engine(url))
    timeout = settings.db_timeout_s
    return Store(make_engine(url, timeout), timeout, settings.db_threads)
