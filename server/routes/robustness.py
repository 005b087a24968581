"""POST /robustness: how a model's answer holds up under n seeded irregular occlusion masks or corruptions."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from PIL import Image

from common.kinds import TASKS, Task
from common.scores import resize_class_map
from model_store.manifest import Manifest, Precision
from robustness.corruptions import CORRUPTIONS, MAX_SEVERITY, MIN_SIDE
from robustness.masks import (
    MAX_RATIO_SPEC_LENGTH,
    RATIO_CHOICES,
    MaskRatio,
    MaskRatioError,
    RatioRange,
    check_mask_batch,
)
from robustness.occlusion_report import (
    CorruptionTimeoutError,
    LabelsNotSupportedError,
    corrupted_batch,
    occluded_batch,
    occlusion_report,
    reference_labels,
)
from robustness.saliency import MIN_SALIENCY_MASKS, explained_classes, saliency_entries
from server.admission import OverloadedError
from server.dependencies import ContextDep, require_api_key
from server.domain_errors import InvalidParameter
from server.errors import ApiError
from server.images import PixelReservation, PreparedImage, decode_label_map
from server.middleware import MAX_MODEL_NAME_LENGTH
from server.pipeline import RequestPipeline, timing
from server.postprocess import masked_pngs
from server.responses import JSONResponse
from server.routes.examples import (
    ERRORS,
    ROBUSTNESS_CORRUPTION_EXAMPLE,
    ROBUSTNESS_EXAMPLE,
    ROBUSTNESS_EXPLAIN_EXAMPLE,
    ROBUSTNESS_SEGMENTER_EXAMPLE,
    ROBUSTNESS_SOFTMAX_EXAMPLE,
    TRUTH_REQUEST_BODY,
)
from server.shapes.robustness import RobustnessResponse
from server.shapes.schema import json_content

router = APIRouter(tags=["robustness"], dependencies=[Depends(require_api_key)])
MAX_MASKS = 64
MAX_LABELS_LENGTH = 4096  # characters of labels=: comma-separated class names
MAX_CORRUPTION_LENGTH = 32  # characters of corruption=; the longest name has 17
DEFAULT_RATIO = "high"
DEFAULT_SEVERITY = 3


def copy_pngs(prepared: PreparedImage, holes: np.ndarray, fill: np.ndarray, copies: np.ndarray | None) -> list[str]:
    """Each perturbed copy as the model sees it (corrupted, then holes in the colour of a normalised 0)."""
    if copies is None:
        return masked_pngs(prepared.resized, holes, fill)
    return [masked_pngs(Image.fromarray(copy, mode="RGB"), hole[None], fill)[0]
            for copy, hole in zip(copies, holes, strict=True)]


def report_and_saliency(manifest: Manifest, outputs: np.ndarray, holes: np.ndarray, truth: list[str] | None,
                        cut: float | None, truth_map: np.ndarray | None,
                        prepared: PreparedImage | None) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The report, and with ``prepared`` (explain=true) the saliency of the classes it judges over that image."""
    report = occlusion_report(manifest.task, manifest.activation, manifest.class_names, outputs, holes, truth, cut,
                              truth_map)
    if prepared is None:
        return report, None
    classes = explained_classes(manifest.task, manifest.activation, report, manifest.class_names)
    return report, saliency_entries(manifest.task, manifest.activation, manifest.class_names, outputs, holes,
                                    classes, np.asarray(prepared.resized))


def mask_ratio_refused(exc: MaskRatioError) -> InvalidParameter:
    """The one answer to a refused mask ratio, whether refused when parsed or when its masks are drawn."""
    return InvalidParameter("invalid_parameter", f"mask_ratio: {exc}")


def corrupted_copies(prepared: PreparedImage, name: str, severity: int, n: int, seed: int,
                     ratio: RatioRange | None,
                     deadline: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``corrupted_batch`` of the input-size image the prepared tensor was made from."""
    return corrupted_batch(prepared.tensor, np.asarray(prepared.resized), prepared.normaliser, name, severity, n,
                           seed, ratio, deadline)


# Corrupted batches being made: one at a time per event loop. A glass_blur copy takes ~0.3 s at 160 px, so a
# few such requests side by side would hold every decode thread for seconds; the others wait here, off the pool.
_CORRUPTION_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
    weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def corruption_slot(pipeline: RequestPipeline, request: Request) -> AsyncIterator[None]:
    """Hold the corruption slot, waiting for it at most until the request's deadline (504 past it)."""
    slots = _CORRUPTION_SLOTS.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(1))
    try:
        async with asyncio.timeout(pipeline.deadline(request) - time.monotonic()):
            await slots.acquire()
    except TimeoutError:
        raise pipeline.deadline_exceeded() from None
    try:
        yield
    finally:
        slots.release()


def check_corruption_params(corruption: str | None, severity: int | None,
                            input_size: tuple[int, int]) -> tuple[str, int] | None:
    """(name, severity) of a valid corruption request, None without one; 422 for anything else."""
    if corruption is None:
        if severity is not None:
            raise ApiError(422, "invalid_parameter", "severity: applies only with corruption= (one of "
                           f"{', '.join(CORRUPTIONS)})")
        return None
    if corruption not in CORRUPTIONS:
        raise ApiError(422, "invalid_parameter", f"corruption: {corruption!r} is not a corruption; choose one of "
                       f"{', '.join(CORRUPTIONS)}")
    if min(input_size) < MIN_SIDE:
        raise ApiError(422, "invalid_parameter", f"corruption: this model's {input_size[1]}x{input_size[0]} input "
                       f"is too small to corrupt (both sides must be >= {MIN_SIDE} pixels)")
    return corruption, DEFAULT_SEVERITY if severity is None else severity


def read_truth(data: bytes, prepared: PreparedImage, num_classes: int, size: tuple[int, int],
               max_pixels: int, reserve_pixels: PixelReservation | None = None) -> np.ndarray:
    """The uploaded ground-truth label PNG as class ids at the model's (height, width) (nearest; 255 = void);
    its decode reserved through ``reserve_pixels`` first."""
    labels = decode_label_map(data, max_pixels, num_classes, prepared.decoded.original_size, reserve_pixels)
    return resize_class_map(labels, (size[1], size[0]))


@router.post(
    "/robustness",
    summary="Occlusion and corruption robustness of one image's answer",
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
                "**Corruptions.** `corruption=NAME&severity=K` (ImageNet-C, K in 1..5, default "
                f"{DEFAULT_SEVERITY}) makes the n copies corrupted ones instead: the image resized to the model's "
                "input is corrupted with seeds seed..seed+n-1, then normalised. The irregular masks are drawn on "
                "top only when `mask_ratio` is given as well; then each copy is corrupted and masked. Without "
                "masks every `hole_ratio` is 0 and `mask_ratio` is null. The answer echoes `corruption` "
                "(`{name, severity}`, or null). Names: " + ", ".join(CORRUPTIONS) + ".\n\n"
                "**Saliency.** `explain=true` adds `saliency`: RISE heatmaps (Petsiuk et al. 2018) from the same "
                "masks and the same batch (no extra inference): per pixel, the mean score of the copies in which "
                "it was kept. One entry per class judged (sigmoid: the `reference` classes; softmax: the "
                "reference class; segmenters: each foreground class of the clean map, scored per copy by the "
                "share of its clean pixels that keep the class), with `label`, `score` (the clean score; for a "
                "segmenter the share of the clean map the class covers), `peak` `{x, y}` (the heatmap's maximum "
                "in model-input pixels) and `png_base64` (the heatmap, jet, over the clean input-size image). "
                f"It needs masks and n >= {MIN_SALIENCY_MASKS}; with few masks the map is coarse.\n\n"
                "The same seed gives the same JSON apart from `timing`.\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/robustness?mask_ratio=high&n=16&seed=0'`\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/robustness?mask_ratio=b3&n=32&explain=true'`\n\n"
                "`curl -F file=@photo.jpg 'localhost:8000/robustness?corruption=fog&severity=3&n=8'`\n\n"
                "`curl -F file=@photo.jpg -F truth=@labels.png 'localhost:8000/robustness?model=seg'`",
    openapi_extra=TRUTH_REQUEST_BODY,
    responses={200: json_content(RobustnessResponse, examples={
        "sigmoid": {"summary": "multi-label classifier with labels=", "value": ROBUSTNESS_EXAMPLE},
        "softmax": {"summary": "single-label classifier", "value": ROBUSTNESS_SOFTMAX_EXAMPLE},
        "segmenter": {"summary": "segmenter with a truth PNG", "value": ROBUSTNESS_SEGMENTER_EXAMPLE},
        "explain": {"summary": "explain=true: saliency of the judged classes", "value": ROBUSTNESS_EXPLAIN_EXAMPLE},
        "corruption": {"summary": "corruption=fog&severity=3, no masks", "value": ROBUSTNESS_CORRUPTION_EXAMPLE},
    }), **ERRORS},
)
async def robustness(
    request: Request,
    ctx: ContextDep,
    model: str | None = Query(None, max_length=MAX_MODEL_NAME_LENGTH,
                              description="model name (default: the first model served)"),
    mask_ratio: str | None = Query(None, max_length=MAX_RATIO_SPEC_LENGTH,
                                   description=f"hole-ratio range: {RATIO_CHOICES} (default {DEFAULT_RATIO}; with "
                                               "corruption= no masks unless given)"),
    n: int = Query(16, ge=1, le=MAX_MASKS, description=f"number of masked or corrupted copies (1..{MAX_MASKS})"),
    seed: int = Query(0, ge=0, le=2**32 - 1, description="mask seed (and first corruption seed); the same seed "
                                                          "gives the same copies"),
    labels: str | None = Query(None, max_length=MAX_LABELS_LENGTH,
                               description="ground-truth class names, comma separated (classifiers; exactly one "
                                           "for a softmax model)"),
    threshold: float | None = Query(None, ge=0.0, le=1.0, description="decision threshold of a sigmoid "
                                                                        "classifier (default: the manifest's)"),
    return_masks: bool = Query(False, description="add each masked (or corrupted) copy as a base64 PNG"),
    corruption: str | None = Query(None, max_length=MAX_CORRUPTION_LENGTH,
                                   description="ImageNet-C corruption of the copies: " + ", ".join(CORRUPTIONS)),
    severity: int | None = Query(None, ge=1, le=MAX_SEVERITY,
                                 description=f"corruption severity 1..{MAX_SEVERITY} (default {DEFAULT_SEVERITY}; "
                                             "only with corruption=)"),
    explain: bool = Query(False, description=f"add RISE saliency heatmaps from the masks (needs masks and n >= "
                                             f"{MIN_SALIENCY_MASKS})"),
    precision: Annotated[Precision | None, Query(description="run the copies on this precision of the model: fp32 "
                                                             "or a variant its entry lists (int8, fp16; default: "
                                                             "the served one). The same seed gives the same masks "
                                                             "at every precision")] = None,
) -> JSONResponse:
    """Measure the robustness of one image's prediction to occlusion or corruption."""
    pipeline = await ctx.pipeline_at(ctx.pipeline(model, TASKS, "/robustness"),
                                     precision)
    manifest = pipeline.manifest
    corrupted = check_corruption_params(corruption, severity, manifest.input_size)
    use_masks = mask_ratio is not None or corrupted is None
    masking: MaskRatio | None = None
    if use_masks:
        try:  # before the upload is read: a range no batch of n masks at the model's size can hit is a 422 at once
            masking = MaskRatio.parse(mask_ratio or DEFAULT_RATIO)
            check_mask_batch(n, *manifest.input_size, masking.range)
        except MaskRatioError as exc:
            raise mask_ratio_refused(exc) from None
    ratio = masking.range if masking else None
    if explain and not use_masks:
        raise ApiError(422, "invalid_parameter", "explain: saliency is computed from the masked copies, and "
                       "corruption= without mask_ratio= draws no masks; add mask_ratio= (e.g. b3) to explain")
    if explain and n < MIN_SALIENCY_MASKS:
        raise ApiError(422, "invalid_parameter", f"explain: saliency needs at least {MIN_SALIENCY_MASKS} masks "
                       f"(n={n}); fewer give a map that is mostly the outline of single masks")
    try:
        truth = reference_labels(labels, manifest.class_names, manifest.task, manifest.activation)
    except LabelsNotSupportedError as exc:
        raise ApiError(400, "labels_not_supported", str(exc)) from None
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    received = await pipeline.receive(request, ("truth",))
    prepared = received.prepared
    if "truth" in received.extras and manifest.task != Task.SEGMENTATION:
        raise ApiError(400, "truth_not_supported", "a 'truth' label map applies to segmentation models only; "
                       "give a classifier's true classes as labels=")
    truth_map = None
    if "truth" in received.extras:
        ticket = pipeline.ticket(request)
        try:
            truth_map = await pipeline.off_loop(request, read_truth, received.extras["truth"], prepared,
                                                manifest.num_classes, manifest.input_size, ctx.settings.max_pixels,
                                                ticket.reserve_pixels)
        except OverloadedError as exc:
            raise pipeline.overloaded(exc) from None
        ticket.release_pixels()  # the full-size label map is gone; the map at the model's size is small
    copies = None
    try:
        if corrupted is None and pipeline.runner.device is not None:
            from server.device_masks import occluded_batch_on  # torch: imported only on the device path

            batch, holes = await pipeline.off_loop(request, occluded_batch_on, pipeline.runner.device, prepared.tensor,
                                                   ratio, n, seed)
        elif corrupted is None:
            batch, holes = await pipeline.off_loop(request, occluded_batch, prepared.tensor, ratio, n, seed)
        else:
            async with corruption_slot(pipeline, request):
                batch, holes, copies = await pipeline.off_loop(request, corrupted_copies, prepared, *corrupted, n,
                                                               seed, ratio, pipeline.deadline(request))
    except CorruptionTimeoutError:
        raise pipeline.deadline_exceeded() from None
    except MaskRatioError as exc:  # a range whose masks the generator keeps repeating (bounded redraws)
        raise mask_ratio_refused(exc) from None
    cut = manifest.kind.threshold(manifest.threshold, threshold)
    result = await pipeline.infer(request, batch, exclusive=True)
    del batch
    report, saliency = await pipeline.off_loop(request, report_and_saliency, manifest, result.outputs, holes, truth,
                                               cut, truth_map, prepared if explain else None)
    if return_masks:
        images = await pipeline.off_loop(request, copy_pngs, prepared, holes,
                                         pipeline.runner.normaliser.fill_value(), copies)
        for entry, image in zip(report["masks"], images, strict=True):
            entry["png_base64"] = image
    body = {"model": pipeline.name, "task": manifest.task, "activation": manifest.activation,
            "mask_ratio": masking.describe() if masking else None,
            "corruption": {"name": corrupted[0], "severity": corrupted[1]} if corrupted else None,
            "n": n, "seed": seed, "threshold": cut, "precision": pipeline.runner.precision, **report}
    if explain:
        body["saliency"] = saliency
    body["timing"] = timing(request, prepared, result)
    return JSONResponse(body)
