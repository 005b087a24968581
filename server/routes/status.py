"""Liveness, readiness, the model list, Prometheus metrics and the index of endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from common.kinds import TASKS
from server.banner import curl_examples
from server.dependencies import MetricsDep, RegistryDep, SettingsDep, require_api_key
from server.registry import ModelRegistry
from server.responses import JSONResponse
from server.routes.examples import HEALTH_EXAMPLE, MODELS_EXAMPLE, READY_EXAMPLE
from server.shapes.schema import json_content
from server.shapes.status import Health, IndexResponse, ModelsResponse, NotReady, Readiness

router = APIRouter(tags=["status"])
NOT_READY = {"description": "still loading (or a model failed)", **json_content(NotReady)}
protected = APIRouter(tags=["status"], dependencies=[Depends(require_api_key)])


@router.get("/", summary="Index: every endpoint with a curl example", responses={200: json_content(IndexResponse)})
async def index(settings: SettingsDep,
                registry: RegistryDep) -> JSONResponse:
    """The endpoints and how to call them."""
    examples = curl_examples(settings, registry.manifests)
    return JSONResponse({"service": "occlusion-serve", "docs": "/docs", "ready": registry.ready,
                         "endpoints": [{"endpoint": e, "curl": c} for e, c in examples]})


@router.get("/health", summary="Liveness: the process answers",
            responses={200: json_content(Health, example=HEALTH_EXAMPLE)})
async def health() -> JSONResponse:
    """Always 200 while the process serves HTTP."""
    return JSONResponse({"status": "ok"})


def readiness(registry: ModelRegistry) -> JSONResponse:
    """200 when every model is warm, else 503 with each model's state."""
    if registry.ready:
        return JSONResponse({"ready": True, "models": registry.states})
    pending = [f"{name}: {state}" for name, state in registry.states.items() if state != "ready"]
    return JSONResponse({"error": "not_ready", "detail": "models not ready yet: " + ", ".join(pending),
                         "ready": False, "models": registry.states}, status_code=503, headers={"Retry-After": "1"})


@router.get("/ready", summary="Readiness: every model loaded and warmed up",
            responses={200: json_content(Readiness, example=READY_EXAMPLE), 503: NOT_READY})
async def ready(registry: RegistryDep) -> JSONResponse:
    """Ready only when every model is warm."""
    return readiness(registry)


@protected.get("/models", summary="Served models: manifests, runtime provider, batching",
               responses={200: json_content(ModelsResponse, example=MODELS_EXAMPLE)})
async def list_models(registry: RegistryDep,
                      settings: SettingsDep) -> JSONResponse:
    """Every served model with its manifest facts, provider and batch configuration."""
    defaults = {task: registry.default_for((task,)) for task in TASKS}
    return JSONResponse({"models": [registry.describe(name) for name in registry.names],
                         "defaults": defaults, "settings": settings.public()})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Request counts and latencies, queue depth, batch sizes and inference time."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
