"""One model's request pipeline: admit, read, decode and prepare, run under the deadline, time.

In the manner of LitServe's decode -> predict -> encode: a route parses its parameters, asks the pipeline for
the prepared image and the model's outputs, and shapes its reply. Admission and deadlines live only here.
"""

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

from model_store.manifest import Manifest
from server.batching import BatchResult, DeadlineExceededError, QueueFullError
from server.errors import ApiError
from server.images import PreparedImage, prepare_image
from server.logs import annotate
from server.metrics import ServerMetrics
from server.middleware import START_KEY
from server.runner import ModelRunner
from server.settings import Settings
from server.uploads import read_upload

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    """An admitted request's image, prepared for the model, and any extra multipart files it carried."""

    prepared: PreparedImage
    extras: dict[str, bytes]


class RequestPipeline:
    """Request bytes -> model outputs for one model, with admission, a deadline and timing."""

    def __init__(self, runner: ModelRunner, settings: Settings, metrics: ServerMetrics,
                 decode_pool: Executor) -> None:
        self.runner, self.settings, self.metrics, self.decode_pool = runner, settings, metrics, decode_pool

    @property
    def manifest(self) -> Manifest:
        """The served model's manifest."""
        return self.runner.manifest

    @property
    def name(self) -> str:
        """The served model's name."""
        return self.runner.name

    def retry_after(self) -> str:
        """A Retry-After hint in whole seconds: about one queue's worth of batches."""
        settings = self.settings
        batches = settings.queue_size / settings.max_batch
        return str(max(1, math.ceil(batches * max(settings.max_delay_ms, 50.0) / 1000.0)))

    def queue_full(self) -> ApiError:
        """The 503 answer for a full queue (counted), with a Retry-After estimate."""
        self.metrics.count_rejection(self.name, "queue_full")
        return ApiError(503, "queue_full", f"model {self.name!r} has {self.settings.queue_size} requests waiting; "
                        "retry later", headers={"Retry-After": self.retry_after()})

    def admit(self) -> None:
        """Shed at once, before the body is read or decoded, when the model's queue is already full.

        Under overload most requests are refused here, so refusing costs no upload read and no JPEG
        decode; the batcher's own bounded queue still catches the few that arrive while others decode.
        """
        if self.runner.depth >= self.settings.queue_size:
            raise self.queue_full()

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function in the decode pool."""
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)

    async def receive(self, request: Request, extra_files: tuple[str, ...] = (), draft: bool = True) -> Received:
        """Admit the request, read its upload, and decode and prepare the image off the event loop.

        ``draft=False`` keeps the full-resolution image (an overlay needs it; a class map alone does not).
        """
        self.admit()
        data, extras = await read_upload(request, extra_files)
        prepared = await self.off_loop(prepare_image, data, self.runner.input_size, self.runner.normaliser,
                                       self.settings.max_pixels, draft)
        return Received(prepared, extras)

    def deadline(self, request: Request) -> float:
        """The monotonic instant by which this request must be answered."""
        return request.scope.get(START_KEY, time.monotonic()) + self.settings.timeout_ms / 1000.0

    async def infer(self, request: Request, images: np.ndarray, exclusive: bool = False) -> BatchResult:
        """Outputs for an (n, 3, H, W) stack, batched with other requests unless ``exclusive``; 503 when the
        queue is full, 504 past the deadline."""
        annotate(request, model=self.name)
        try:
            result = await self.runner(images, self.deadline(request), exclusive)
        except QueueFullError:
            raise self.queue_full() from None
        except DeadlineExceededError:
            self.metrics.count_rejection(self.name, "deadline")
            raise ApiError(504, "deadline_exceeded",
                           f"no answer within {self.settings.timeout_ms:g} ms (--timeout-ms)") from None
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
