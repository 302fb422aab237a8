"""The HTTP/1.1 protocol `aduan serve` runs: uvicorn's h11 implementation, with the request
head bounded in time and size.

uvicorn picks httptools when it is installed, and httptools has no head size limit (a 128 MB
head was buffered whole before the app could refuse it); h11 refuses a head that grows past
`h11_max_incomplete_event_size`, and this class answers that with 431 in the service's error
form (uvicorn would say 400). Neither bounds the head in time: the keep-alive timer starts
only after a first answer and stops at the first byte of the next request, so an idle
connection or a head trickled a byte at a time was served after any delay. Here the head
must be complete within `header_timeout_s` of the connection opening (or of the previous
answer): otherwise 408 (nothing when not one byte came) and the connection closes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _answer(status: int, reason: str, error_type: str, message: str) -> bytes:
    body = json.dumps({"error": message, "error_type": error_type}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedH11Protocol(H11Protocol):
    """h11 with a deadline for each request head and 431 for a head over the size limit."""

    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._protocol_error: h11.RemoteProtocolError | None = None
        next_event = self.conn.next_event

        def remembering() -> Any:  # uvicorn drops the error's status hint (431): keep it
            try:
                return next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = exc
                raise

        self.conn.next_event = remembering  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is complete (or broken)
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the next request's head has the same deadline

    def send_400_response(self, msg: str) -> None:
        error = self._protocol_error
        if error is not None and getattr(error, "error_status_hint", 400) == 431:
            limit = self.config.h11_max_incomplete_event_size
            message = f"the request head is larger than the limit of {limit} bytes"
            self.transport.write(
                _answer(431, "Request Header Fields Too Large", "headers_too_large", message)
            )
            self.transport.close()
            return
        super().send_400_response(msg)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        started, _ = self.conn.trailing_data
        if started:  # part of a head came: say why the connection closes
            message = f"the request head did not arrive within {self.header_timeout_s:g} s"
            self.transport.write(_answer(408, "Request Timeout", "timeout", message))
        self.transport.close()


def bounded_h11(header_timeout_s: float) -> type[BoundedH11Protocol]:
    """The protocol class for uvicorn's `http` setting, with this head deadline."""
    return type("BoundedH11", (BoundedH11Protocol,), {"header_timeout_s": header_timeout_s})
