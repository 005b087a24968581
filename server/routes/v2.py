"""KServe v2 / Open Inference Protocol over HTTP: health, server and model metadata, infer (FP32 tensors)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from server.dependencies import ContextDep, RegistryDep, SettingsDep, require_api_key
from server.errors import ApiError
from server.kserve import (
    HEADER_LENGTH,
    PLATFORMS,
    SERVER_METADATA,
    check_limits,
    infer_response,
    model_metadata,
    parse_bytes,
    parse_infer_request,
    run_bytes,
)
from server.registry import ModelRegistry
from server.responses import JSONResponse
from server.routes.examples import V2_INFER_REQUEST, V2_INFER_REQUEST_SCHEMA, V2_INFER_RESPONSE, V2_METADATA
from server.routes.status import NOT_READY, readiness
from server.shapes.kserve import V2InferResponse, V2Live, V2ModelMetadata, V2ModelReady, V2ServerMetadata
from server.shapes.schema import json_content
from server.shapes.status import Readiness

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
models = APIRouter(prefix="/v2", tags=["kserve-v2"], dependencies=[Depends(require_api_key)])
ModelName = Path(..., description="model name from /v2/models/... or /models", examples=["r18"])


@router.get("/health/live", summary="v2 liveness", responses={200: json_content(V2Live)})
async def live() -> JSONResponse:
    """200 while the process serves HTTP."""
    return JSONResponse({"live": True})


@router.get("/health/ready", summary="v2 readiness: every model warm",
            responses={200: json_content(Readiness), 503: NOT_READY})
async def ready(registry: RegistryDep) -> JSONResponse:
    """200 when every model is warm, else 503."""
    return readiness(registry)


@router.get("", summary="v2 server metadata", responses={200: json_content(V2ServerMetadata)})
async def server_metadata() -> JSONResponse:
    """Server name, version and supported extensions."""
    return JSONResponse(SERVER_METADATA)


def _check_version(registry: ModelRegistry, model: str, request: Request) -> None:
    """404 for an unknown model, or for a version (``/versions/{v}/`` routes) other than the served one."""
    manifest = registry.manifest(model)
    version = request.path_params.get("version")
    if version is not None and version != manifest.version:
        raise ApiError(404, "unknown_version", f"model {model!r} has version {manifest.version!r}, not {version!r}")


@models.get("/models/{model}", summary="v2 model metadata: input and output tensors",
            responses={200: json_content(V2ModelMetadata, example=V2_METADATA)})
@models.get("/models/{model}/versions/{version}", include_in_schema=False)
async def metadata(request: Request, registry: RegistryDep, settings: SettingsDep,
                   model: str = ModelName) -> JSONResponse:
    """Tensor names, FP32 datatype and shapes (-1 = any batch)."""
    _check_version(registry, model, request)
    return JSONResponse(model_metadata(registry.manifest(model), PLATFORMS[settings.backend]))


@models.get("/models/{model}/ready", summary="v2 model readiness",
            responses={200: json_content(V2ModelReady),
                       503: {"description": "the model is loading", **json_content(V2ModelReady)}})
@models.get("/models/{model}/versions/{version}/ready", include_in_schema=False)
async def model_ready(request: Request, registry: RegistryDep, model: str = ModelName) -> JSONResponse:
    """200 when the model is warm, 503 while it loads."""
    _check_version(registry, model, request)
    is_ready = registry.states[model] == "ready"
    return JSONResponse({"name": model, "ready": is_ready}, status_code=200 if is_ready else 503)


@models.post(
    "/models/{model}/infer",
    summary="v2 inference on FP32 tensors",
    description="Body as in the KServe v2 spec (JSON `data`, flat row-major), or Triton's binary tensor extension "
                "(`Inference-Header-Content-Length`). Inputs are already preprocessed: resized and normalised "
                "as the model's manifest says. Batched with concurrent requests. Each image is held to "
                "`--max-pixels` and the answer to `--max-response-bytes` (413), and the parse, the model run and "
                "the answer reserve their memory in the in-flight budget (503 `overloaded`).",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": V2_INFER_REQUEST_SCHEMA, "example": V2_INFER_REQUEST},
        "application/octet-stream": {}}}},
    responses={200: json_content(V2InferResponse, example=V2_INFER_RESPONSE)},
)
@models.post("/models/{model}/versions/{version}/infer", include_in_schema=False)
async def infer(request: Request, ctx: ContextDep, model: str = ModelName) -> Response:
    """Run the model on the request's tensor."""
    _check_version(ctx.registry, model, request)
    pipeline = ctx.pipeline_by_name(model)
    body = await pipeline.read_body(request)  # admitted by queue and by bytes (reserved until the request ends)
    if not body:
        raise ApiError(400, "empty_body", "the request carries no body; send a v2 inference request (JSON)")
    manifest, settings, header_length = pipeline.manifest, ctx.settings, request.headers.get(HEADER_LENGTH)
    pipeline.reserve_memory(request, parse_bytes(len(body), header_length))
    # JSON parsing and encoding of large tensors would stall every other request on the event loop.
    parsed = await pipeline.off_loop(request, parse_infer_request, body, header_length, manifest, stage="decode")
    del body
    pipeline.ticket(request).release_pixels()  # the parser's Python objects are gone; the tensor is counted next
    check_limits(manifest, parsed, settings.max_pixels, settings.max_response_bytes)
    pipeline.reserve_memory(request, run_bytes(manifest, parsed.images.shape, parsed.binary_output,
                                               settings.max_batch))
    result = await pipeline.infer(request, parsed.images)
    content, headers = await pipeline.off_loop(request, infer_response, manifest, result.outputs, parsed)
    return Response(content, headers=headers, media_type=headers["Content-Type"])
