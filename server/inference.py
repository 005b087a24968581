"""Request plumbing shared by the routes: read the upload, decode it off the loop, run the model with a deadline."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from PIL import Image

from server.batching import BatchResult, DeadlineExceededError, QueueFullError
from server.errors import ApiError
from server.images import DecodedImage, ImageRejectedError, decode_image, resize_to_input
from server.logs import annotate
from server.metrics import ServerMetrics
from server.middleware import START_KEY
from server.runner import ModelRunner
from server.settings import Settings

ACCEPTED_BODIES = "multipart/form-data with a 'file' field, or a raw body with Content-Type image/*"
RAW_TYPES = ("application/octet-stream",)
T = TypeVar("T")

# Example for OpenAPI: both ways to send an image.
IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image, as a multipart field named `file` or as the raw body (`Content-Type: image/jpeg`).",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def read_upload(request: Request, extra_files: tuple[str, ...] = ()) -> tuple[bytes, dict[str, bytes]]:
    """The uploaded image bytes (multipart ``file`` field or raw ``image/*`` body) and any of the optional
    multipart file fields named in ``extra_files`` that were sent (a raw body carries only the image)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    extras: dict[str, bytes] = {}
    if media == "multipart/form-data":
        form = await request.form(max_files=1 + len(extra_files), max_fields=16)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                fields = ", ".join(form.keys()) or "none"
                raise ApiError(400, "missing_file", f"the multipart body has no file field named 'file' "
                               f"(fields sent: {fields})")
            data = await upload.read()
            for name in extra_files:
                part = form.get(name)
                if part is None:
                    continue
                if isinstance(part, str):
                    raise ApiError(400, "invalid_field", f"the multipart field {name!r} must be a file upload "
                                   f"(e.g. curl -F {name}=@file.png), not a text value")
                extras[name] = await part.read()
        finally:
            await form.close()
    else:
        data = await request.body()
        if data and not (media.startswith("image/") or media in RAW_TYPES):
            raise ApiError(415, "unsupported_media_type",
                           f"Content-Type {media or 'missing'!r} is not accepted; send {ACCEPTED_BODIES}")
    if not data:
        raise ApiError(400, "empty_body", f"the request carries no image bytes; send {ACCEPTED_BODIES}")
    return data, extras


async def read_image_bytes(request: Request) -> bytes:
    """The uploaded image bytes from a multipart ``file`` field or a raw ``image/*`` body."""
    data, _ = await read_upload(request)
    return data


async def off_loop(pool: Executor, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking function in a pool thread."""
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


@dataclass(frozen=True)
class PreparedImage:
    """A decoded upload and the model input made from it."""

    decoded: DecodedImage
    resized: Image.Image  # RGB at the model's input size
    tensor: np.ndarray  # (3, H, W) float32, normalised
    seconds: float  # decode + resize + normalise time


def prepare_image(data: bytes, runner: ModelRunner, max_pixels: int, draft: bool = True) -> PreparedImage:
    """Decode, orient, convert to RGB, resize and normalise (blocking; call through ``off_loop``)."""
    start = time.perf_counter()
    height, width = runner.input_size
    try:
        decoded = decode_image(data, max_pixels, (width, height) if draft else None)
    except ImageRejectedError as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    resized = resize_to_input(decoded.rgb, runner.input_size)
    tensor = runner.normaliser(resized)
    return PreparedImage(decoded, resized, tensor, time.perf_counter() - start)


def deadline_of(request: Request, settings: Settings) -> float:
    """The monotonic instant by which this request must be answered."""
    return request.scope.get(START_KEY, time.monotonic()) + settings.timeout_ms / 1000.0


def retry_after(runner: ModelRunner) -> str:
    """A Retry-After hint in whole seconds: about one queue's worth of batches."""
    batches = runner.config.queue_size / runner.config.max_batch
    return str(max(1, math.ceil(batches * max(runner.config.max_delay_ms, 50.0) / 1000.0)))


def queue_full(runner: ModelRunner, metrics: ServerMetrics) -> ApiError:
    """The 503 answer for a full queue (counted), with a Retry-After estimate."""
    metrics.count_rejection(runner.name, "queue_full")
    return ApiError(503, "queue_full", f"model {runner.name!r} has {runner.config.queue_size} requests waiting; "
                    "retry later", headers={"Retry-After": retry_after(runner)})


def admit(runner: ModelRunner, metrics: ServerMetrics) -> None:
    """Shed at once, before the body is read or decoded, when the model's queue is already full.

    Under overload most requests are refused here, so refusing costs no upload read and no JPEG
    decode; the batcher's own bounded queue still catches the few that arrive while others decode.
    """
    if runner.batcher is not None and runner.batcher.depth >= runner.config.queue_size:
        raise queue_full(runner, metrics)


async def run_model(request: Request, runner: ModelRunner, images: np.ndarray, settings: Settings,
                    metrics: ServerMetrics, exclusive: bool = False) -> BatchResult:
    """Submit images to the runner's batcher; 503 when its queue is full, 504 past the deadline."""
    annotate(request, model=runner.name)
    try:
        result = await runner(images, deadline_of(request, settings), exclusive)
    except QueueFullError:
        raise queue_full(runner, metrics) from None
    except DeadlineExceededError:
        metrics.count_rejection(runner.name, "deadline")
        raise ApiError(504, "deadline_exceeded",
                       f"no answer within {settings.timeout_ms:g} ms (--timeout-ms)") from None
    annotate(request, batch_size=result.batch_size, queue_ms=round(result.queue_seconds * 1000, 2),
             inference_ms=round(result.inference_seconds * 1000, 2))
    return result


def timing(request: Request, prepared: PreparedImage | None, result: BatchResult) -> dict[str, float]:
    """Milliseconds spent decoding, queued, in inference and in total, plus the batch size."""
    total = time.monotonic() - request.scope.get(START_KEY, time.monotonic())
    return {
        "decode_ms": round(prepared.seconds * 1000, 2) if prepared else 0.0,
        "queue_ms": round(result.queue_seconds * 1000, 2),
        "inference_ms": round(result.inference_seconds * 1000, 2),
        "total_ms": round(total * 1000, 2),
        "batch_size": result.batch_size,
    }


def server_timing(times: dict[str, float]) -> str:
    """The same figures as a standard ``Server-Timing`` header (for binary responses)."""
    return ", ".join(f"{key.removesuffix('_ms')};dur={value}" for key, value in times.items() if key.endswith("_ms"))
