"""Prometheus metrics and structured JSON request logs (never the complaint text).

Names follow Prometheus' conventions: the `aduan_` prefix, base units in the name
(`_seconds`), `_total` on every counter. HTTP metrics are labelled `method`, `handler` (the
route template, so cardinality stays bounded) and `status`; `route` is only ever the routing
decision (`auto` or `review`).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

access_log = logging.getLogger("aduan.access")
TRACE_HEADER = "X-Trace-ID"
_TRACE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def _trace_id(given: str | None) -> str:
    """The caller's trace id when it is a plain token (it is echoed into logs and headers),
    else a fresh one."""
    return given if given and _TRACE.match(given) else uuid.uuid4().hex


class Metrics:
    """One registry per app, so several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aduan_http_requests_total",
            "HTTP requests answered",
            ["method", "handler", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "aduan_http_request_duration_seconds",
            "Time from a request's arrival to its answer",
            ["method", "handler", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "aduan_inference_batch_size",
            "Texts per inference batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.request_items = Histogram(
            "aduan_request_items",
            "Items per classify request",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.predictions = Counter(
            "aduan_predictions_total", "Predicted labels", ["head", "label"], registry=self.registry
        )
        self.routes = Counter(
            "aduan_route_decisions_total",
            "Classified complaints by routing decision (auto or review)",
            ["route"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "aduan_model_info",
            "The model version answering (1)",
            ["version"],
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "aduan_model_loaded_timestamp_seconds",
            "When the model answering was loaded",
            registry=self.registry,
        )
        self.reloads = Counter(
            "aduan_model_reloads_total",
            "Model reload attempts by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.auto_share = Gauge(
            "aduan_auto_route_share",
            "Share of classified complaints routed automatically",
            registry=self.registry,
        )
        self._auto = 0
        self._total = 0

    def model_loaded_now(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        self.model_loaded.set_to_current_time()

    def observe_prediction(self, category: str, agency: str, route: str) -> None:
        self.predictions.labels("category", category).inc()
        self.predictions.labels("agency", agency).inc()
        self.routes.labels(route).inc()
        self._total += 1
        self._auto += route == "auto"
        self.auto_share.set(self._auto / self._total)


def _handler_of(request: Request) -> str:
    # The route template keeps label cardinality bounded ("/v1/x/{id}", not every id).
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def install_observability(
    app: FastAPI, metrics: Metrics, serving: Callable[[], str | None] | None = None
) -> None:
    """Request metrics, one JSON log line per request, and the `X-Trace-ID` and
    `X-Model-Version` headers: the version a route says answered (`request.state.model_version`)
    or else the one `serving()` names."""

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # The trace id names this HTTP request; a stored complaint's id is its request_id.
        trace_id = _trace_id(request.headers.get(TRACE_HEADER))
        request.state.trace_id = trace_id
        request.state.log_extra = {}
        request.state.model_version = None
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
        finally:
            elapsed = time.perf_counter() - started
            handler = _handler_of(request)
            version = request.state.model_version or (serving() if serving else None)
            labels = (request.method, handler, str(status))
            metrics.requests.labels(*labels).inc()
            metrics.duration.labels(*labels).observe(elapsed)
            record: dict[str, Any] = {
                "trace_id": trace_id,
                "method": request.method,
                "handler": handler,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "model_version": version,
                **request.state.log_extra,
            }
            access_log.info(json.dumps(record, ensure_ascii=False))
        response.headers[TRACE_HEADER] = trace_id
        if version:
            response.headers["X-Model-Version"] = version
        return response
