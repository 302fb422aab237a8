"""`GET /v1/labels` and `GET /v1/info`: what the live model knows and its limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from aduan.service.deps import ReadyStateDep
from aduan.service.schemas import AgencyInfo, CategoryInfo, LabelsResponse

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/labels", response_model=LabelsResponse, summary="The taxonomy of the live model")
def labels(state: ReadyStateDep) -> LabelsResponse:
    assert state.classifier is not None and state.taxonomy is not None
    taxonomy = state.taxonomy
    known = set(state.classifier.classes_["category"])
    categories = [
        CategoryInfo(code=c.code, name=c.name, description=c.description)
        for c in taxonomy.categories
        if c.code in known
    ]
    agencies = []
    for name in state.classifier.classes_["agency"]:
        entry = taxonomy.agency(name)
        agencies.append(AgencyInfo(name=name, code=entry.code if entry else name))
    return LabelsResponse(categories=categories, agencies=agencies)


@router.get("/info", summary="Model version, labels, thresholds, limits and validation metrics")
def info(state: ReadyStateDep) -> dict[str, Any]:
    pipeline = state.pipeline  # once: a reload may swap it while this runs
    assert pipeline is not None
    classifier = pipeline.classifier
    settings = state.settings
    validation = pipeline.metrics.get("validation", {})
    return {
        "model_version": classifier.version,
        "model_source": {
            "registry": str(settings.registry) if settings.registry else None,
            "source": state.source,
            "loaded_at": state.loaded_at.isoformat(timespec="seconds") if state.loaded_at else None,
        },
        "model_type": classifier.config["model_type"],
        "engine": settings.engine,
        "backend": settings.backend,
        "base_encoder": classifier.config.get("base_encoder"),
        "labels": {head: list(labels) for head, labels in classifier.classes_.items()},
        "thresholds": classifier.thresholds,
        "temperatures": classifier.temperatures,
        "limits": {
            "max_batch": settings.max_batch,
            "max_chars": settings.max_chars,
            "max_top_k": 10,
            "batching": settings.batching,
            "batch_max_size": settings.batch_max_size,
            "batch_max_wait_ms": settings.batch_max_wait_ms,
            "queue_size": settings.queue_size,
            **(
                {
                    "ray_replicas": settings.ray_replicas,
                    "ray_max_replicas": max(settings.ray_max_replicas, settings.ray_replicas),
                }
                if settings.backend == "ray"
                else {}
            ),
        },
        "validation_metrics": {
            head: {
                k: m.get(k)
                for k in (
                    "accuracy",
                    "macro_f1",
                    "top3_accuracy",
                    "ece",
                    "auto_route_coverage",
                    "auto_route_accuracy",
                )
            }
            for head, m in validation.items()
        },
        "split": pipeline.metrics.get("split"),
    }
