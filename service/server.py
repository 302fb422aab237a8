"""The HTTP server process: uvicorn with a graceful, bounded drain on SIGTERM.

On SIGTERM readiness fails at once (`/health/ready` answers 503, so a load balancer stops
sending), requests are still served for `drain_delay_s` (each answer closing its connection),
then the listening socket closes, in-flight requests get up to `shutdown_timeout_s` to finish,
the model and database are released, and the process exits 0. A second SIGTERM (or SIGINT)
skips the delay.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from .protocol import bounded_h11
from .settings import Settings
from .state import ServiceState

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    ACCEPTED_GRACE_S = 0.25

    def __init__(self, config: uvicorn.Config, state: ServiceState, drain_delay_s: float):
        super().__init__(config)
        self.state = state
        self.drain_delay_s = drain_delay_s
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_started is None:
            # Not recorded as a captured signal: uvicorn would raise it again once stopped,
            # and the process would end by the signal instead of exiting 0.
            self.drain_started = time.monotonic()
            self.state.draining = True
            log.info("SIGTERM: draining (readiness fails; %.1f s more serving)", self.drain_delay_s)
            return
        if sig == signal.SIGTERM:
            self.should_exit = True  # a second SIGTERM: stop waiting
            return
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, then give connections accepted a moment ago the time to read
        # their request: uvicorn closes at once every connection with no request parsed yet,
        # and a request already on its way would then get a TCP reset instead of an answer.
        for server in self.servers:
            server.close()
        await asyncio.sleep(self.ACCEPTED_GRACE_S)
        await super().shutdown(sockets)

    async def on_tick(self, counter: int) -> bool:
        started = self.drain_started
        if started is not None and not self.should_exit:
            self.should_exit = time.monotonic() - started >= self.drain_delay_s
            if self.should_exit:
                log.info("drain delay over: closing the listener, finishing in-flight requests")
        return await super().on_tick(counter)


def run(app: FastAPI, settings: Settings, host: str, port: int) -> bool:
    """Serve until stopped; False when the app never started (e.g. its model was refused)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(max(1, round(settings.shutdown_timeout_s))),
        # h11, never httptools: its head size limit holds, and the head has a deadline.
        http=bounded_h11(settings.header_timeout_s),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.max_connections,
        proxy_headers=False,  # the app applies them, from ADUAN_TRUSTED_PROXIES only
    )
    server = DrainingServer(config, app.state.service, settings.drain_delay_s)
    server.run()
    return bool(server.started) or server.drain_started is not None
