"""POST /robustness: how a model's answer holds up under n seeded irregular occlusion masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from robustness.masks import RATIO_CHOICES, apply_mask, masks, parse_ratio
from server.dependencies import ContextDep, require_api_key
from server.errors import ApiError
from server.images import ImageRejectedError, decode_label_map
from server.inference import (
    IMAGE_REQUEST_BODY,
    PreparedImage,
    admit,
    off_loop,
    prepare_image,
    read_upload,
    run_model,
)
from server.inference import timing as request_timing
from server.postprocess import class_map, class_scores, resize_class_map
from server.robustness_report import (
    classification_robustness,
    masked_pngs,
    segmentation_robustness,
    softmax_robustness,
)
from server.routes.examples import (
    ERRORS,
    ROBUSTNESS_EXAMPLE,
    ROBUSTNESS_SEGMENTER_EXAMPLE,
    ROBUSTNESS_SOFTMAX_EXAMPLE,
)
from server.runner import ModelRunner

router = APIRouter(tags=["robustness"], dependencies=[Depends(require_api_key)])
MAX_MASKS = 64


def parse_truth(labels: str | None, class_names: list[str], task: str, activation: str = "sigmoid") -> list[str] | None:
    """Ground-truth class names from ``labels=a,b``; 422 naming the allowed values (one class for a softmax
    model), 400 for segmenters."""
    if labels is None:
        return None
    if task != "classification":
        raise ApiError(400, "labels_not_supported", "labels= (ground truth) applies to classification models only; "
                       "send a segmenter's ground truth as a multipart 'truth' PNG")
    names = [name.strip() for name in labels.split(",") if name.strip()]
    unknown = [name for name in names if name not in class_names]
    if not names or unknown:
        given = ", ".join(unknown) if unknown else "nothing"
        raise ApiError(422, "invalid_parameter",
                       f"labels: {given} is not a class of this model (allowed: {', '.join(class_names)})")
    names = list(dict.fromkeys(names))
    if activation == "softmax" and len(names) > 1:
        raise ApiError(422, "invalid_parameter", f"labels: {', '.join(names)} are {len(names)} classes; this "
                       "model is a single-label (softmax) classifier, so give exactly one true class")
    return names


def read_truth(data: bytes, runner: ModelRunner, prepared: PreparedImage, max_pixels: int) -> np.ndarray:
    """The uploaded ground-truth label PNG as class ids at the model's map size (nearest resize; 255 = void)."""
    try:
        labels = decode_label_map(data, max_pixels, len(runner.manifest.class_names), prepared.decoded.original_size)
    except ImageRejectedError as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    height, width = runner.input_size
    return resize_class_map(labels, (width, height))


def occluded_batch(prepared: PreparedImage, runner: ModelRunner, ratio: tuple[float, float], n: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean input followed by n masked copies, (n + 1, 3, H, W), and the (n, H, W) hole masks."""
    height, width = runner.input_size
    holes = masks(n, height, width, ratio, seed)
    clean = prepared.tensor
    masked = apply_mask(np.broadcast_to(clean, (n, *clean.shape)), holes)
    return np.concatenate([clean[None], masked.astype(np.float32, copy=False)]), holes


def build_report(runner: ModelRunner, outputs: np.ndarray, holes: np.ndarray, labels: list[str] | None,
                 threshold: float, truth_map: np.ndarray | None, prepared: PreparedImage,
                 return_masks: bool) -> dict[str, Any]:
    """Blocking part of /robustness: compare the masked answers with the clean one."""
    ratios = holes.reshape(len(holes), -1).mean(axis=1)
    manifest = runner.manifest
    if manifest.task == "classification":
        scores = class_scores(outputs, manifest.activation)
        if manifest.activation == "softmax":
            report = softmax_robustness(scores[0], scores[1:], manifest.class_names, ratios, labels)
        else:
            report = classification_robustness(scores[0], scores[1:], manifest.class_names, threshold, ratios,
                                               labels)
    else:
        maps = np.stack([class_map(o) for o in outputs])
        report = segmentation_robustness(maps[0], maps[1:], holes, manifest.class_names, ratios, truth_map)
    if return_masks:
        images = masked_pngs(prepared.resized, holes, runner.normaliser.fill_value())
        for entry, image in zip(report["masks"], images, strict=True):
            entry["png_base64"] = image
    return report


TRUTH_REQUEST_BODY: dict[str, Any] = {"requestBody": {
    **IMAGE_REQUEST_BODY["requestBody"],
    "description": "The image, as a multipart field named `file` or as the raw body (`Content-Type: image/jpeg`). "
                   "Segmenters: an optional multipart field `truth`, a palette or greyscale PNG of the image's size "
                   "whose pixel values are class ids (255 = void).",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"},
            "truth": {"type": "string", "format": "binary",
                      "description": "ground-truth label PNG (segmenters only)"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}}


@router.post(
    "/robustness",
    summary="Occlusion robustness of one image's answer",
    description="Applies n seeded irregular masks (holes become 0 after normalisation), runs them as one batch "
                "next to the clean image and compares. Every figure describes this one image; dataset metrics "
                "(mAP, mIoU over a test set) belong to offline evaluation.\n\n"
                "- Multi-label (sigmoid) classifiers judge the `reference` classes: the true `labels=` if given, "
                "else the clean prediction. Per class `retention` (fraction of masks under which it stays "
                "positive) and `score_drop_present`; apart from them `false_positives` (classes a mask makes "
                "positive) and `mean_score_rise_absent`; with `labels=` also `clean_correctness`. A clean "
                "image on which nothing is predicted gives null retention and a `warning`.\n"
                "- Single-label (softmax) classifiers: `top1_retention` (fraction of masks whose top-1 is the "
                "reference class: the one `labels=` class, else the clean top-1) and `true_class_score_drop`.\n"
                "- Segmenters: per-class IoU of the masked maps against the clean map and `miou_foreground` "
                "(without background), over all pixels, inside and outside the holes; with a `truth` PNG "
                "(multipart), pixel accuracy and mIoU against it for the clean and the masked maps.\n\n"
                "The same seed gives the same JSON apart from `timing`.\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/robustness?mask_ratio=high&n=16&seed=0'`\n\n"
                "`curl -F file=@photo.jpg -F truth=@labels.png 'localhost:8000/robustness?model=seg'`",
    openapi_extra=TRUTH_REQUEST_BODY,
    responses={200: {"content": {"application/json": {"examples": {
        "sigmoid": {"summary": "multi-label classifier with labels=", "value": ROBUSTNESS_EXAMPLE},
        "softmax": {"summary": "single-label classifier", "value": ROBUSTNESS_SOFTMAX_EXAMPLE},
        "segmenter": {"summary": "segmenter with a truth PNG", "value": ROBUSTNESS_SEGMENTER_EXAMPLE},
    }}}}, **ERRORS},
)
async def robustness(
    request: Request,
    ctx: ContextDep,
    model: str | None = Query(None, description="model name (default: the first model served)"),
    mask_ratio: str = Query("high", description=f"hole-ratio range: {RATIO_CHOICES}"),
    n: int = Query(16, ge=1, le=MAX_MASKS, description=f"number of masks (1..{MAX_MASKS})"),
    seed: int = Query(0, ge=0, le=2**32 - 1, description="mask seed; the same seed gives the same masks"),
    labels: str | None = Query(None, description="ground-truth class names, comma separated (classifiers; "
                                                 "exactly one for a softmax model)"),
    threshold: float | None = Query(None, ge=0.0, le=1.0, description="decision threshold of a sigmoid "
                                                                        "classifier (default: the manifest's)"),
    return_masks: bool = Query(False, description="add each masked image as a base64 PNG"),
) -> JSONResponse:
    """Measure the robustness of one image's prediction to occlusion."""
    runner = ctx.registry.resolve(model, ("classification", "segmentation"), "/robustness")
    manifest = runner.manifest
    admit(runner, ctx.metrics)
    try:
        ratio = parse_ratio(mask_ratio)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", f"mask_ratio: {exc}") from None
    truth = parse_truth(labels, manifest.class_names, manifest.task, manifest.activation)
    data, extras = await read_upload(request, ("truth",))
    if "truth" in extras and manifest.task != "segmentation":
        raise ApiError(400, "truth_not_supported", "a 'truth' label map applies to segmentation models only; "
                       "give a classifier's true classes as labels=")
    prepared = await off_loop(ctx.decode_pool, prepare_image, data, runner, ctx.settings.max_pixels)
    truth_map = None
    if "truth" in extras:
        truth_map = await off_loop(ctx.decode_pool, read_truth, extras["truth"], runner, prepared,
                                   ctx.settings.max_pixels)
    try:
        batch, holes = await off_loop(ctx.decode_pool, occluded_batch, prepared, runner, ratio, n, seed)
    except ValueError as exc:  # a range no mask of this size can hit
        raise ApiError(422, "invalid_parameter", f"mask_ratio: {exc}") from None
    sigmoid_classifier = manifest.task == "classification" and manifest.activation == "sigmoid"
    cut = (manifest.threshold if threshold is None else threshold) if sigmoid_classifier else None
    result = await run_model(request, runner, batch, ctx.settings, ctx.metrics, exclusive=True)
    report = await off_loop(ctx.decode_pool, build_report, runner, result.outputs, holes, truth, cut, truth_map,
                            prepared, return_masks)
    body = {"model": runner.name, "task": manifest.task, "activation": manifest.activation,
            "mask_ratio": {"spec": mask_ratio, "range": list(ratio)}, "n": n, "seed": seed, "threshold": cut,
            **report, "timing": request_timing(request, prepared, result)}
    return JSONResponse(body)
