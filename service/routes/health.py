"""Liveness, readiness and Prometheus metrics (open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aduan.service.deps import StateDep
from aduan.service.errors import not_ready

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The process is up")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="The model is loaded and warmed up",
    responses={503: {"description": "Not ready yet"}},
)
def ready(state: StateDep) -> dict[str, str]:
    if not state.ready:
        raise not_ready()
    return {
        "status": "ready",
        "model_version": state.classifier.version if state.classifier else "unknown",
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
