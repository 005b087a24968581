"""POST /predict: multi-label recognition of one image."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from server.dependencies import ContextDep, require_api_key
from server.inference import IMAGE_REQUEST_BODY, admit, off_loop, prepare_image, read_image_bytes, run_model, timing
from server.postprocess import labels_above, score_table, sigmoid
from server.routes.examples import ERRORS, PREDICT_EXAMPLE

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])


@router.post(
    "/predict",
    summary="Labels of one image (multi-label classifier)",
    description="Send an image as multipart field `file` or as a raw `image/*` body. Returns the labels whose "
                "sigmoid score reaches the threshold, highest first.\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/predict?top_k=3&scores=true'`",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={200: {"content": {"application/json": {"example": PREDICT_EXAMPLE}}}, **ERRORS},
)
async def predict(
    request: Request,
    ctx: ContextDep,
    model: str | None = Query(None, description="model name (default: the first classification model)"),
    top_k: int | None = Query(None, ge=1, le=1000, description="return at most this many labels"),
    threshold: float | None = Query(None, ge=0.0, le=1.0, description="score threshold (default: the manifest's)"),
    scores: bool = Query(False, description="also return every class's score"),
) -> JSONResponse:
    """Labels above the threshold for one image."""
    runner = ctx.registry.resolve(model, ("classification",), "/predict")
    admit(runner, ctx.metrics)
    data = await read_image_bytes(request)
    prepared = await off_loop(ctx.decode_pool, prepare_image, data, runner, ctx.settings.max_pixels)
    result = await run_model(request, runner, prepared.tensor[None], ctx.settings, ctx.metrics)
    probabilities = sigmoid(result.outputs[0])
    names = runner.manifest.class_names
    cut = runner.manifest.threshold if threshold is None else threshold
    body: dict = {"model": runner.name, "labels": labels_above(probabilities, names, cut, top_k)}
    if scores:
        body["scores"] = score_table(probabilities, names)
    body["threshold"] = cut
    body["timing"] = timing(request, prepared, result)
    return JSONResponse(body)
