"""Bounds on a database that hangs instead of refusing: a deadline for every database call and
a thread pool of the database's own.

A database behind a network that stops forwarding (a dead host, a stuck proxy, a firewall
that drops) never answers and never closes: the driver waits forever, the worker thread with
it, and with the event loop's shared pool exhausted every route that stores stalls. So:

- each store operation has a deadline (`Deadline`): past it, the connection it holds is cut
  (its socket shut down for PostgreSQL, `interrupt()` for SQLite), the driver raises, the
  transaction is never committed and the caller answers 503 `database_unavailable`;
- calls from the event loop run in `DatabasePool`, a few threads of their own, and a call
  that cannot start within the deadline (every thread busy) is refused without being run;
- PostgreSQL connections also carry TCP keepalives and `tcp_user_timeout` (a peer that
  vanished is noticed by the kernel) and a server-side `statement_timeout` (`storage.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)
R = TypeVar("R")


class DatabaseBusy(OperationalError):
    """No database thread was free within the deadline: the call was not run."""

    def __init__(self, waited: float) -> None:
        message = f"no database thread free within {waited:.1f} s"
        super().__init__(message, None, TimeoutError(message))


def cut(dbapi_connection: Any) -> None:
    """Make a driver blocked on `dbapi_connection` fail now, from another thread."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is not None:  # psycopg: shut the socket down (a closed fd could be reused)
        with contextlib.suppress(OSError, ValueError):
            dup = socket.fromfd(pgconn.socket, socket.AF_INET, socket.SOCK_STREAM)
            try:
                dup.shutdown(socket.SHUT_RDWR)
            finally:
                dup.close()
        return
    interrupt = getattr(dbapi_connection, "interrupt", None)  # sqlite3
    if interrupt is not None:
        with contextlib.suppress(Exception):
            interrupt()


class Deadline:
    """Cuts the connections a thread holds when its operation outlives `seconds`. One
    watcher thread for every deadline (a heap of them), so arming one costs no thread."""

    def __init__(self, engine: Engine, seconds: float) -> None:
        self.seconds = seconds
        self._held: dict[int, list[Any]] = {}  # thread id -> DBAPI connections checked out
        self._heap: list[tuple[float, int, int]] = []  # (when, token, thread id)
        self._armed: set[int] = set()
        self._tokens = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self.cuts = 0
        event.listen(engine, "checkout", lambda conn, _record, _proxy: self._hold(conn))
        event.listen(engine, "checkin", lambda conn, _record: self._release(conn))
        # The pool's pre-ping runs before the checkout event: a ping on a connection that no
        # longer answers would hang unseen, so the connection is held during the ping too.
        ping = engine.dialect.do_ping

        def do_ping(dbapi_connection: Any) -> bool:
            self._hold(dbapi_connection)
            try:
                return ping(dbapi_connection)
            finally:
                self._release(dbapi_connection)

        engine.dialect.do_ping = do_ping  # type: ignore[method-assign]
        threading.Thread(target=self._watch, name="db-deadline", daemon=True).start()

    def _hold(self, dbapi_connection: Any) -> None:
        with self._wake:
            self._held.setdefault(threading.get_ident(), []).append(dbapi_connection)

    def _release(self, dbapi_connection: Any) -> None:
        with self._wake:
            for held in self._held.values():
                if dbapi_connection in held:
                    held.remove(dbapi_connection)
                    return

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """The block's database work must end within `seconds`, or its connections are cut."""
        token, thread = next(self._tokens), threading.get_ident()
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + self.seconds, token, thread))
            self._armed.add(token)
            self._wake.notify()
        try:
            yield
        finally:
            with self._wake:
                self._armed.discard(token)

    def close(self) -> None:
        """Stop the watcher thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _watch(self) -> None:
        while not self._closed:
            with self._wake:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # finished in time
                timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                if timeout is None or timeout > 0:
                    self._wake.wait(timeout)
                    continue
                _, token, thread = heapq.heappop(self._heap)
                self._armed.discard(token)
                victims = list(self._held.get(thread, ()))
            for connection in victims:
                self.cuts += 1
                log.error(
                    "a database call outlived its %.1f s deadline: its connection is cut",
                    self.seconds,
                )
                cut(connection)


class DatabasePool:
    """The threads that run database calls for the event loop: `threads` of them, apart from
    the loop's default pool (model reloads, explanations' callers), so a stalled database
    takes only these."""

    def __init__(self, threads: int, start_within_s: float) -> None:
        self.start_within_s = start_within_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="database")

    async def run(self, work: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """`work(*args, **kwargs)` in a database thread; `DatabaseBusy` (not run at all) when
        no thread took it within `start_within_s`."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()

        def mark_started() -> None:
            if not started.done():
                started.set_result(None)

        def begin() -> R:
            loop.call_soon_threadsafe(mark_started)
            return work(*args, **kwargs)

        job: Future[R] = self._executor.submit(begin)
        try:
            await asyncio.wait_for(asyncio.shield(started), self.start_within_s)
        except TimeoutError:
            if job.cancel():  # never started: nothing was done
                raise DatabaseBusy(self.start_within_s) from None
        return await asyncio.wrap_future(job)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
