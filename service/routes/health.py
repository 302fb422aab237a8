"""Liveness, readiness and Prometheus metrics (open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aduan.service.deps import StateDep
from aduan.service.errors import not_ready

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The process is up")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="The model is loaded and warmed up; the database's state",
    responses={
        503: {"description": "Not ready yet, shutting down, or (when required) no database"}
    },
)
def ready(state: StateDep, request: Request) -> dict[str, str]:
    """`status` is `ready`, or `degraded` while the database is unavailable (classify without
    `store` still answers; with `ADUAN_READY_REQUIRES_DATABASE` this is a 503 instead) or the
    keys file cannot be used (`keys_file: unusable`: none of its keys is accepted)."""
    if state.draining:
        raise not_ready("the service is shutting down")
    if not state.ready:
        raise not_ready()
    store = state.store
    database = "none" if store is None else "ok" if store.available else "unavailable"
    if database == "unavailable" and state.settings.ready_requires_database:
        raise not_ready(f"the database is unavailable ({store.last_error})")
    ring = request.app.state.keys
    ring.keys()  # re-read the file when it changed: the answer is about the file as it is now
    keys_broken = ring.broken is not None
    answer = {
        "status": "degraded" if database == "unavailable" or keys_broken else "ready",
        "model_version": state.classifier.version if state.classifier else "unknown",
        "database": database,
    }
    if keys_broken:
        answer["keys_file"] = "unusable"
    return answer


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
