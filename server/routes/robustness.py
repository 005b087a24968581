"""POST /robustness: how a model's answer holds up under n seeded irregular occlusion masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from robustness.masks import RATIO_CHOICES, apply_mask, masks, parse_ratio
from server.dependencies import ContextDep, require_api_key
from server.errors import ApiError
from server.inference import (
    IMAGE_REQUEST_BODY,
    PreparedImage,
    admit,
    off_loop,
    prepare_image,
    read_image_bytes,
    run_model,
)
from server.inference import timing as request_timing
from server.postprocess import class_map, sigmoid
from server.robustness_report import classification_robustness, masked_pngs, segmentation_robustness
from server.routes.examples import ERRORS, ROBUSTNESS_EXAMPLE
from server.runner import ModelRunner

router = APIRouter(tags=["robustness"], dependencies=[Depends(require_api_key)])
MAX_MASKS = 64


def parse_truth(labels: str | None, class_names: list[str], task: str) -> list[str] | None:
    """Ground-truth class names from ``labels=a,b``; 422 naming the allowed values, 400 for segmenters."""
    if labels is None:
        return None
    if task != "classification":
        raise ApiError(400, "labels_not_supported", "labels= (ground truth) applies to classification models only")
    names = [name.strip() for name in labels.split(",") if name.strip()]
    unknown = [name for name in names if name not in class_names]
    if not names or unknown:
        given = ", ".join(unknown) if unknown else "nothing"
        raise ApiError(422, "invalid_parameter",
                       f"labels: {given} is not a class of this model (allowed: {', '.join(class_names)})")
    return list(dict.fromkeys(names))


def occluded_batch(prepared: PreparedImage, runner: ModelRunner, ratio: tuple[float, float], n: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean input followed by n masked copies, (n + 1, 3, H, W), and the (n, H, W) hole masks."""
    height, width = runner.input_size
    holes = masks(n, height, width, ratio, seed)
    clean = prepared.tensor
    masked = apply_mask(np.broadcast_to(clean, (n, *clean.shape)), holes)
    return np.concatenate([clean[None], masked.astype(np.float32, copy=False)]), holes


def build_report(runner: ModelRunner, outputs: np.ndarray, holes: np.ndarray, truth: list[str] | None,
                 prepared: PreparedImage, return_masks: bool) -> dict[str, Any]:
    """Blocking part of /robustness: compare the masked answers with the clean one."""
    ratios = holes.reshape(len(holes), -1).mean(axis=1)
    manifest = runner.manifest
    if manifest.task == "classification":
        scores = sigmoid(outputs)
        report = classification_robustness(scores[0], scores[1:], manifest.class_names, manifest.threshold,
                                           ratios, truth)
    else:
        maps = np.stack([class_map(o) for o in outputs])
        report = segmentation_robustness(maps[0], maps[1:], holes, manifest.class_names, ratios)
    if return_masks:
        images = masked_pngs(prepared.resized, holes, runner.normaliser.fill_value())
        for entry, image in zip(report["masks"], images, strict=True):
            entry["png_base64"] = image
    return report


@router.post(
    "/robustness",
    summary="Occlusion robustness of one image's answer",
    description="Applies n seeded irregular masks (holes become 0 after normalisation), runs them as one batch "
                "next to the clean image and compares. Classifiers: per-class retention, mean score drop, "
                "label-set Jaccard, flips (and the 7 multi-label metrics with `labels=`). Segmenters: mIoU of "
                "the masked maps against the clean map inside and outside the holes. The same seed gives the "
                "same JSON apart from `timing`.\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/robustness?mask_ratio=high&n=16&seed=0'`",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={200: {"content": {"application/json": {"example": ROBUSTNESS_EXAMPLE}}}, **ERRORS},
)
async def robustness(
    request: Request,
    ctx: ContextDep,
    model: str | None = Query(None, description="model name (default: the first model served)"),
    mask_ratio: str = Query("high", description=f"hole-ratio range: {RATIO_CHOICES}"),
    n: int = Query(16, ge=1, le=MAX_MASKS, description=f"number of masks (1..{MAX_MASKS})"),
    seed: int = Query(0, ge=0, le=2**32 - 1, description="mask seed; the same seed gives the same masks"),
    labels: str | None = Query(None, description="ground-truth class names, comma separated (classifiers)"),
    return_masks: bool = Query(False, description="add each masked image as a base64 PNG"),
) -> JSONResponse:
    """Measure the robustness of one image's prediction to occlusion."""
    runner = ctx.registry.resolve(model, ("classification", "segmentation"), "/robustness")
    admit(runner, ctx.metrics)
    try:
        ratio = parse_ratio(mask_ratio)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", f"mask_ratio: {exc}") from None
    truth = parse_truth(labels, runner.manifest.class_names, runner.manifest.task)
    data = await read_image_bytes(request)
    prepared = await off_loop(ctx.decode_pool, prepare_image, data, runner, ctx.settings.max_pixels)
    try:
        batch, holes = await off_loop(ctx.decode_pool, occluded_batch, prepared, runner, ratio, n, seed)
    except ValueError as exc:  # a range no mask of this size can hit
        raise ApiError(422, "invalid_parameter", f"mask_ratio: {exc}") from None
    result = await run_model(request, runner, batch, ctx.settings, ctx.metrics, exclusive=True)
    report = await off_loop(ctx.decode_pool, build_report, runner, result.outputs, holes, truth, prepared, return_masks)
    body = {"model": runner.name, "task": runner.manifest.task,
            "mask_ratio": {"spec": mask_ratio, "range": list(ratio)}, "n": n, "seed": seed,
            "threshold": runner.manifest.threshold if runner.manifest.task == "classification" else None,
            **report, "timing": request_timing(request, prepared, result)}
    return JSONResponse(body)
