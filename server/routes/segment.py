"""POST /segment: the class map of one image at its original size (PNG, JSON statistics or an overlay)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from common.kinds import Task
from common.scores import class_map, resize_class_map
from server import costs
from server.dependencies import ContextDep, require_api_key
from server.images import PreparedImage
from server.middleware import MAX_MODEL_NAME_LENGTH
from server.pipeline import server_timing, timing
from server.postprocess import overlay_png, palette_png, region_statistics
from server.responses import JSONResponse
from server.routes.examples import ERRORS, IMAGE_REQUEST_BODY, SEGMENT_JSON_EXAMPLE
from server.shapes.inference import SegmentResponse
from server.shapes.schema import json_schema

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])


def _render(prepared: PreparedImage, logits, fmt: str, alpha: float, class_names: list[str]) -> bytes | list:
    """Blocking part of /segment: argmax, resize to the original size, encode."""
    classes = resize_class_map(class_map(logits), prepared.decoded.original_size)
    if fmt == "png":
        return palette_png(classes)
    if fmt == "overlay":
        return overlay_png(prepared.decoded.rgb, classes, alpha)
    return region_statistics(classes, class_names)


@router.post(
    "/segment",
    summary="Class map of one image (segmenter)",
    description="Returns the predicted class of every pixel at the image's original size (after EXIF orientation)."
                "\n\n- `format=png` (default): a palette PNG whose pixel values are class ids (VOC colours);"
                "\n- `format=json`: per-class pixel areas and connected-component instance counts by size "
                "(S < 32², M < 96², L otherwise);\n- `format=overlay`: a PNG of the class colours blended over "
                "the image (background left clear).\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/segment?format=json'`",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                 "application/json": {"schema": json_schema(SegmentResponse),
                                                      "example": SEGMENT_JSON_EXAMPLE}}}, **ERRORS},
)
async def segment(
    request: Request,
    ctx: ContextDep,
    model: str | None = Query(None, max_length=MAX_MODEL_NAME_LENGTH,
                              description="model name (default: the first segmentation model)"),
    format: Literal["png", "json", "overlay"] = Query("png", description="png | json | overlay"),
    alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity of the class colours"),
) -> Response:
    """Segment one image."""
    pipeline = ctx.pipeline(model, (Task.SEGMENTATION,), "/segment")
    prepared = (await pipeline.receive(request, draft=format != "overlay", on_device=True,
                                       render_bytes=costs.RENDER_BYTES[format])).prepared
    result = await pipeline.infer(request, prepared.tensor[None])
    rendered = await pipeline.off_loop(request, _render, prepared, result.outputs[0], format, alpha,
                                       pipeline.manifest.class_names)
    times = timing(request, prepared, result)
    width, height = prepared.decoded.original_size
    if format == "json":
        return JSONResponse({"model": pipeline.name, "size": [height, width], "classes": rendered, "timing": times})
    headers = {"Server-Timing": server_timing(times), "X-Model": pipeline.name, "X-Image-Size": f"{width}x{height}"}
    return Response(rendered, media_type="image/png", headers=headers)
