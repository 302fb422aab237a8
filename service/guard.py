"""What every request passes before any route parses it: the URL holds no NUL, the head is
within `max_header_bytes` (431), the body is read with a size cap
(413 as soon as it is exceeded, from Content-Length or while streaming) and a deadline (408
for a client that sends its body byte by byte), and a JSON body must be UTF-8, free of duplicate
keys and lone surrogates, not nested absurdly deep, and sent as `application/json` to `/v1`
(415 otherwise). While the service drains after SIGTERM, every answer closes its connection.

A plain ASGI middleware: the body is read once here and handed on to the app unchanged.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from .errors import error_body, open311_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = ("POST", "PUT", "PATCH")
# nginx's "client closed request": in the access log and metrics only, nobody receives it.
CLIENT_GONE = 499
log = logging.getLogger(__name__)


class _Refused(Exception):
    def __init__(self, status: int, error_type: str, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.error_type, self.message, self.close = status, error_type, message, close


class _Gone(Exception):
    """The client disconnected before its body was complete."""


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in a parsed JSON document holds a lone surrogate
    (`"\\ud800"` parses, but it is not text: it cannot be encoded, stored or logged)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def check_json(body: bytes) -> None:
    """Raise `_Refused` (422) for a body that is not clean JSON text."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(
            422, "validation_error", f"the body is not valid UTF-8 (byte {exc.start})"
        ) from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        raise _Refused(
            422, "validation_error", f"duplicate key {str(exc)[:100]!r} in the JSON body"
        ) from None
    except RecursionError:
        raise _Refused(422, "validation_error", "the JSON body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise _Refused(
            422, "validation_error", f"the body is not valid JSON: {exc.msg} at {exc.pos}"
        ) from None
    if _lone_surrogate(document):
        raise _Refused(
            422, "validation_error", "the JSON body holds a lone surrogate: not Unicode text"
        )


def _check_url(scope: Scope) -> None:
    """NUL in a path or query parameter: no stored id or filter value can hold one (PostgreSQL
    text cannot), so it is refused here rather than failing in the database."""
    query: bytes = scope.get("query_string", b"")
    if "\x00" in scope["path"] or b"%00" in query.lower():
        raise _Refused(400, "bad_request", "NUL characters are not allowed in the URL")


def _announces_body(scope: Scope) -> bool:
    """Whether the request's head announces a body (a Content-Length above 0, or chunked)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class RequestGuard:
    """The body size cap and deadline, JSON hygiene and drain-time `Connection: close`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        max_header_bytes: int = 16 * 1024,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._closing_when_draining(send)
        headers = Headers(scope=scope)
        try:
            _check_url(scope)
            self._check_head(scope)
            if not self._has_body(headers):
                await self.app(scope, receive, send)
                return
            body = await self._read(receive)
            self._check(scope, headers, body)
        except _Refused as refused:
            await self._refuse(scope, receive, send, refused)
            return
        except _Gone:
            # Not an error of the service: answered (nobody reads it; the middleware around
            # must see an answer, or it reports a 500 with tracebacks) and logged as such.
            log.info("the client disconnected before its body was complete")
            gone = _Refused(CLIENT_GONE, "client_disconnected", "the client went away", True)
            await self._refuse(scope, receive, send, gone)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_head(self, scope: Scope) -> None:
        # uvicorn bounds a head that arrives slowly; one that arrives in a single read is
        # measured here (431, as RFC 6585 says).
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        size += sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
        if size > self.max_header_bytes:
            raise _Refused(
                431,
                "headers_too_large",
                f"the request head has {size} bytes; the limit is {self.max_header_bytes}",
                close=True,
            )

    def _has_body(self, headers: Headers) -> bool:
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
                if size < 0:
                    raise ValueError
            except ValueError:
                raise _Refused(400, "bad_request", "invalid Content-Length", close=True) from None
            if size > self.max_body_bytes:
                raise _Refused(
                    413,
                    "payload_too_large",
                    f"the body has {size} bytes; the limit is {self.max_body_bytes}",
                    close=True,
                )
            return size > 0
        return "chunked" in headers.get("transfer-encoding", "").lower()

    async def _read(self, receive: Receive) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise _Refused(
                    408,
                    "timeout",
                    f"the body did not arrive within {self.body_timeout_s:g} s",
                    close=True,
                ) from None
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(
                    413,
                    "payload_too_large",
                    f"the body is larger than the limit of {self.max_body_bytes} bytes",
                    close=True,
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _check(self, scope: Scope, headers: Headers, body: bytes) -> None:
        if not body or scope["method"] not in BODY_METHODS:
            return
        path: str = scope["path"]
        content_type = headers.get("content-type", "")
        if path.startswith("/v1/") and not _is_json(content_type):
            raise _Refused(
                415,
                "unsupported_media",
                f"send the body as Content-Type: application/json, not {content_type[:100]!r}",
            )
        if _is_json(content_type):
            check_json(body)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, why: _Refused) -> None:
        path: str = scope["path"]
        headers = {"Connection": "close"} if why.close else None
        response: Response
        if path.startswith("/open311/"):
            status = 400 if why.status == 422 else why.status
            response = open311_error(status, why.message, xml=path.endswith(".xml"))
            if headers:
                response.headers.update(headers)
        else:
            response = JSONResponse(
                error_body(why.message, why.error_type), why.status, headers=headers
            )
        await response(scope, receive, send)

    def _closing_when_draining(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and self.draining():
                message["headers"] = [
                    *[(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"],
                    (b"connection", b"close"),
                ]
            await send(message)

        return wrapped


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body read here, then the client's later messages
    (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class AdmissionControl:
    """Sheds load at the door: when the requests already inside would keep a new one waiting
    longer than `max_wait_s` (in-flight requests / the measured service rate), or more than
    `max_inflight` are inside, it answers 429 with Retry-After at once, before any parsing,
    logging or inference. Without it an overloaded service queues requests in the event
    loop until clients time out. Health and metrics are never shed.

    The rate is the service's capacity, not the demand: completions per second of the time
    something was inside (busy time) over a window of at least WINDOW_S that spans CYCLES
    recent latencies (a batched model's bursts of completions), trusted once at least
    `min_inflight` completions were seen there. Completions per wall-clock second would read
    an idle service as a slow one and shed the first burst after a quiet spell.

    A request with a body is inside only once its body has arrived: while a client is still
    sending it (for up to the body deadline) it uses no capacity, and counting it would let
    a few clients that trickle their bodies, holding no key, make the service shed everyone
    else."""

    WINDOW_S = 2.0  # the shortest window the rate is measured over
    MAX_WINDOW_S = 30.0  # the longest, and the history kept
    # The window spans at least this many recent mean latencies. A batched model completes
    # its requests in bursts, one per batch: a window of one or two bursts reads anywhere
    # from half to all of the true rate (16 clients on a transformer taking 1.5 s a batch
    # were measured at 8/s, not 10.7/s, and shed), a window of ten is within a tenth.
    CYCLES = 10
    LATENCIES = 32  # completions the mean latency is taken over

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_wait_s: float,
        max_inflight: int,
        min_inflight: int = 8,
        on_shed: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.max_wait_s = max_wait_s
        self.max_inflight = max_inflight
        self.min_inflight = min_inflight
        self.on_shed = on_shed
        self.inflight = 0
        self._done: deque[float] = deque()  # completion times
        self._latencies: deque[float] = deque(maxlen=self.LATENCIES)
        # Spells with requests inside: [start, busy clock at the start, end or None]. The busy
        # clock (busy seconds since the first spell) only grows, so the busy time of any
        # window is a difference of two readings.
        self._spells: deque[list[Any]] = deque()
        self._busy_total = 0.0  # busy seconds of the finished spells
        self._busy_since: float | None = None  # start of the current spell

    def _busy_clock(self, now: float) -> float:
        """Busy seconds (at least one request inside) from the start to `now`."""
        running = now - self._busy_since if self._busy_since is not None else 0.0
        return self._busy_total + running

    def window(self) -> float:
        """Seconds the rate is measured over: CYCLES recent mean latencies, within
        [WINDOW_S, MAX_WINDOW_S]."""
        if not self._latencies:
            return self.WINDOW_S
        mean = sum(self._latencies) / len(self._latencies)
        return min(self.MAX_WINDOW_S, max(self.WINDOW_S, self.CYCLES * mean))

    def _clock_at(self, moment: float) -> float:
        """The busy clock at a past `moment` (flat while idle, one second a second while
        busy), from the spells kept."""
        # the first spell starting at or after it
        index = bisect.bisect_left(self._spells, moment, key=lambda spell: spell[0])
        if index == 0:  # before every spell kept: nothing busy between then and the first
            return float(self._spells[0][1]) if self._spells else self._busy_total
        start, clock, end = self._spells[index - 1]
        return float(clock) + (min(moment, end) if end is not None else moment) - start

    def busy_seconds(self, now: float, window: float | None = None) -> float:
        """Seconds of the last `window` (default: `window()`) with a request inside."""
        cutoff = now - (self.window() if window is None else window)
        return max(0.0, self._busy_clock(now) - self._clock_at(cutoff))

    def rate(self, now: float) -> float | None:
        """Requests completed per busy second over the last `window()`; None until at least
        `min_inflight` completions were seen there."""
        while self._done and now - self._done[0] > self.MAX_WINDOW_S:
            self._done.popleft()
        while self._spells and self._spells[0][2] is not None:  # finished spells, old ones
            if now - self._spells[0][2] <= self.MAX_WINDOW_S:
                break
            self._spells.popleft()
        window = self.window()
        count = len(self._done) - bisect.bisect_left(self._done, now - window)
        busy = self.busy_seconds(now, window)
        if count < max(1, self.min_inflight) or busy <= 0:
            return None
        return count / busy

    def estimated_wait(self, now: float) -> float:
        rate = self.rate(now)
        return self.inflight / rate if rate else 0.0

    def _enter(self, now: float) -> None:
        if self.inflight == 0:
            self._busy_since = now
            self._spells.append([now, self._busy_total, None])
        self.inflight += 1

    def _leave(self, now: float, entered: float | None = None) -> None:
        self.inflight -= 1
        self._done.append(now)
        if entered is not None:
            self._latencies.append(now - entered)
        if self.inflight == 0 and self._busy_since is not None:
            self._busy_total += now - self._busy_since
            self._busy_since = None
            self._spells[-1][2] = now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(("/health/", "/metrics")):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        wait = self.estimated_wait(now)
        too_slow = self.max_wait_s > 0 and self.inflight >= self.min_inflight
        if self.inflight >= self.max_inflight or (too_slow and wait > self.max_wait_s):
            self.on_shed()
            after = str(max(1, math.ceil(wait - self.max_wait_s)))
            message = "the service is overloaded; retry after Retry-After seconds"
            headers = {"Retry-After": after}
            response: Response
            if path.startswith("/open311/"):
                response = open311_error(429, message, xml=path.endswith(".xml"))
                response.headers.update(headers)
            else:
                response = JSONResponse(error_body(message, "overloaded"), 429, headers=headers)
            await response(scope, receive, send)
            return
        entered: float | None = None

        def enter() -> None:
            nonlocal entered
            entered = time.monotonic()
            self._enter(entered)

        async def counting() -> Message:
            message = await receive()
            body_done = message["type"] == "http.request" and not message.get("more_body")
            if body_done and entered is None:
                enter()
            return message

        if not _announces_body(scope):
            enter()
        try:
            await self.app(scope, counting, send)
        finally:
            if entered is not None:
                self._leave(time.monotonic(), entered)
