"""POST /predict: labels of one image, multi-label (sigmoid) or single-label (softmax) by the model's manifest."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from common.kinds import Task
from common.scores import class_scores, score_table, top_labels
from model_store.manifest import ModelKind
from server.dependencies import ContextDep, require_api_key
from server.errors import ApiError
from server.middleware import MAX_MODEL_NAME_LENGTH
from server.pipeline import timing
from server.responses import JSONResponse
from server.routes.examples import ERRORS, IMAGE_REQUEST_BODY, PREDICT_EXAMPLE, PREDICT_SOFTMAX_EXAMPLE
from server.shapes.inference import PredictResponse
from server.shapes.schema import json_content

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])
SOFTMAX_TOP_K = 5  # labels returned by a single-label (softmax) classifier when top_k is not given


def check_finite_scores(scores: np.ndarray, model: str) -> None:
    """500 ``non_finite_output`` for NaN or infinite scores (as /v2 answers), which JSON cannot carry as numbers;
    the JSON encoder would write them as null."""
    if not np.isfinite(scores).all():
        raise ApiError(500, "non_finite_output", f"model {model!r} produced NaN or infinite scores; they cannot be "
                       "sent as JSON numbers")


@router.post(
    "/predict",
    summary="Labels of one image (classifier)",
    description="Send an image as multipart field `file` or as a raw `image/*` body. The model's manifest says "
                "how logits become scores (`activation` in the answer and in /models):\n\n"
                "- `sigmoid` (multi-label): the labels whose score reaches the threshold (default: the "
                "manifest's), highest first, at most `top_k`;\n"
                f"- `softmax` (single-label, e.g. ImageNet): the `top_k` (default {SOFTMAX_TOP_K}) most probable "
                "classes, highest first; the probabilities of all classes sum to 1, and `threshold` filters "
                "only when given.\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/predict?top_k=3&scores=true'`\n\n"
                f"A softmax model answers like `{json.dumps(PREDICT_SOFTMAX_EXAMPLE, separators=(',', ':'))}`.",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={200: json_content(PredictResponse, example=PREDICT_EXAMPLE), **ERRORS},
)
async def predict(
    request: Request,
    ctx: ContextDep,
    model: str | None = Query(None, max_length=MAX_MODEL_NAME_LENGTH,
                              description="model name (default: the first classification model)"),
    top_k: int | None = Query(None, ge=1, le=1000, description="return at most this many labels (softmax models: "
                                                                f"default {SOFTMAX_TOP_K})"),
    threshold: float | None = Query(None, ge=0.0, le=1.0, description="score threshold (sigmoid default: the "
                                                                        "manifest's; softmax: none unless given)"),
    scores: bool = Query(False, description="also return every class's score"),
) -> JSONResponse:
    """Labels of one image."""
    pipeline = ctx.pipeline(model, (Task.CLASSIFICATION,), "/predict")
    prepared = (await pipeline.receive(request, on_device=True)).prepared
    result = await pipeline.infer(request, prepared.tensor[None])
    manifest = pipeline.manifest
    probabilities = class_scores(result.outputs[0], manifest.activation)
    check_finite_scores(probabilities, pipeline.name)
    single_label = manifest.kind is ModelKind.SINGLE_LABEL
    # a single-label answer is its top classes; a threshold sent with it only filters them
    cut = threshold if single_label else manifest.kind.threshold(manifest.threshold, threshold)
    limit = (top_k or SOFTMAX_TOP_K) if single_label else top_k
    labels = top_labels(probabilities, manifest.class_names, limit, cut)
    body: dict[str, Any] = {"model": pipeline.name, "labels": labels}
    if scores:
        body["scores"] = score_table(probabilities, manifest.class_names)
    body["threshold"] = cut
    body["activation"] = manifest.activation
    body["timing"] = timing(request, prepared, result)
    return JSONResponse(body)
