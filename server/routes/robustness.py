"""POST /robustness: how a model's answer holds up under n seeded irregular occlusion masks."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from robustness.masks import MAX_RATIO_SPEC_LENGTH, RATIO_CHOICES, check_mask_batch, parse_ratio
from robustness.occlusion_report import (
    LabelsNotSupportedError,
    occluded_batch,
    occlusion_report,
    reference_labels,
)
from server.dependencies import ContextDep, require_api_key
from server.errors import ApiError
from server.images import PreparedImage, decode_label_map
from server.middleware import MAX_MODEL_NAME_LENGTH
from server.pipeline import timing
from server.postprocess import masked_pngs, resize_class_map
from server.routes.examples import (
    ERRORS,
    ROBUSTNESS_EXAMPLE,
    ROBUSTNESS_SEGMENTER_EXAMPLE,
    ROBUSTNESS_SOFTMAX_EXAMPLE,
    TRUTH_REQUEST_BODY,
)

router = APIRouter(tags=["robustness"], dependencies=[Depends(require_api_key)])
MAX_MASKS = 64
MAX_LABELS_LENGTH = 4096  # characters of labels=: comma-separated class names


def read_truth(data: bytes, prepared: PreparedImage, num_classes: int, size: tuple[int, int],
               max_pixels: int) -> np.ndarray:
    """The uploaded ground-truth label PNG as class ids at the model's (height, width) (nearest; 255 = void)."""
    labels = decode_label_map(data, max_pixels, num_classes, prepared.decoded.original_size)
    return resize_class_map(labels, (size[1], size[0]))


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
    model: str | None = Query(None, max_length=MAX_MODEL_NAME_LENGTH,
                              description="model name (default: the first model served)"),
    mask_ratio: str = Query("high", max_length=MAX_RATIO_SPEC_LENGTH,
                            description=f"hole-ratio range: {RATIO_CHOICES}"),
    n: int = Query(16, ge=1, le=MAX_MASKS, description=f"number of masks (1..{MAX_MASKS})"),
    seed: int = Query(0, ge=0, le=2**32 - 1, description="mask seed; the same seed gives the same masks"),
    labels: str | None = Query(None, max_length=MAX_LABELS_LENGTH,
                               description="ground-truth class names, comma separated (classifiers; exactly one "
                                           "for a softmax model)"),
    threshold: float | None = Query(None, ge=0.0, le=1.0, description="decision threshold of a sigmoid "
                                                                        "classifier (default: the manifest's)"),
    return_masks: bool = Query(False, description="add each masked image as a base64 PNG"),
) -> JSONResponse:
    """Measure the robustness of one image's prediction to occlusion."""
    pipeline = ctx.pipeline(model, ("classification", "segmentation"), "/robustness")
    manifest = pipeline.manifest
    try:  # before the upload is read: a range no batch of n masks at the model's size can hit is a 422 at once
        ratio = parse_ratio(mask_ratio)
        check_mask_batch(n, *manifest.input_size, ratio)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", f"mask_ratio: {exc}") from None
    try:
        truth = reference_labels(labels, manifest.class_names, manifest.task, manifest.activation)
    except LabelsNotSupportedError as exc:
        raise ApiError(400, "labels_not_supported", str(exc)) from None
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    received = await pipeline.receive(request, ("truth",))
    prepared = received.prepared
    if "truth" in received.extras and manifest.task != "segmentation":
        raise ApiError(400, "truth_not_supported", "a 'truth' label map applies to segmentation models only; "
                       "give a classifier's true classes as labels=")
    truth_map = None
    if "truth" in received.extras:
        truth_map = await pipeline.off_loop(request, read_truth, received.extras["truth"], prepared,
                                            manifest.num_classes, manifest.input_size, ctx.settings.max_pixels)
    try:
        batch, holes = await pipeline.off_loop(request, occluded_batch, prepared.tensor, ratio, n, seed)
    except ValueError as exc:  # a range whose masks the generator keeps repeating (bounded redraws)
        raise ApiError(422, "invalid_parameter", f"mask_ratio: {exc}") from None
    sigmoid_classifier = manifest.task == "classification" and manifest.activation == "sigmoid"
    cut = (manifest.threshold if threshold is None else threshold) if sigmoid_classifier else None
    result = await pipeline.infer(request, batch, exclusive=True)
    report = await pipeline.off_loop(request, occlusion_report, manifest.task, manifest.activation,
                                     manifest.class_names, result.outputs, holes, truth, cut, truth_map)
    if return_masks:
        images = await pipeline.off_loop(request, masked_pngs, prepared.resized, holes,
                                         pipeline.runner.normaliser.fill_value())
        for entry, image in zip(report["masks"], images, strict=True):
            entry["png_base64"] = image
    body = {"model": pipeline.name, "task": manifest.task, "activation": manifest.activation,
            "mask_ratio": {"spec": mask_ratio, "range": list(ratio)}, "n": n, "seed": seed, "threshold": cut,
            **report, "timing": timing(request, prepared, result)}
    return JSONResponse(body)
