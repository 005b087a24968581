"""One model's request pipeline: admit, read, decode and prepare, run under the deadline, time.

In the manner of LitServe's decode -> predict -> encode: a route parses its parameters, asks the pipeline for
the prepared image and the model's outputs, and shapes its reply. Admission and deadlines live only here.

Admission is by count (the model's queue) and by weight (the server-wide ``InflightBudget``): a request
reserves its body's bytes as they arrive (refused up front when Content-Length would not fit) and the
working memory of its image steps (``server.costs``: a decode's from the header, before decoding), and is shed
with 503 ``overloaded`` when either would pass its limit (413 when one step alone needs more than the whole
limit). It gives the bytes and pixels back as soon as it drops the body and the full-resolution image; what it
still holds is given back when the request ends (``server.dependencies.get_context``), on errors and
disconnects too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import Request

from model_store.manifest import Manifest
from server import costs, tracing
from server.admission import InflightBudget, OverBudgetError, OverloadedError, Ticket, request_ticket
from server.batching import BatchResult, DeadlineExceededError, QueueFullError
from server.domain_errors import ClientGone, PastDeadline, ServingError, Shed, TooLarge, Unavailable
from server.errors import new_error_id
from server.images import (
    DecodedImage,
    ImageRejectedError,
    PixelReservation,
    PreparedImage,
    device_decodable,
    open_untrusted,
    prepare_image,
)
from server.logs import annotate
from server.middleware import START_KEY
from server.prometheus import ServerMetrics
from server.runner import ModelRunner
from server.settings import Settings
from server.uploads import declared_length, read_body, read_upload

T = TypeVar("T")
log = logging.getLogger("server.pipeline")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it (a queued request leaves the queue).

    The request body has been read, so the next ASGI message can only be ``http.disconnect``; it arrives when
    the client goes away (or after the response, when nobody is waiting any more).
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(request.receive())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            raise ClientGone()
        return task.result()
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()


@dataclass(frozen=True)
class Received:
    """An admitted request's image, prepared for the model, and any extra multipart files it carried."""

    prepared: PreparedImage
    extras: dict[str, bytes]


class RequestPipeline:
    """Request bytes -> model outputs for one model, with admission, a deadline and timing."""

    def __init__(self, runner: ModelRunner, settings: Settings, metrics: ServerMetrics, decode_pool: Executor,
                 budget: InflightBudget | None = None) -> None:
        self.runner, self.settings, self.metrics, self.decode_pool = runner, settings, metrics, decode_pool
        self.budget = budget or InflightBudget(settings.max_inflight_bytes, settings.max_inflight_pixels)

    @property
    def manifest(self) -> Manifest:
        """The served model's manifest."""
        return self.runner.manifest

    @property
    def name(self) -> str:
        """The served model's name."""
        return self.runner.name

    def retry_after(self) -> int:
        """A Retry-After hint in whole seconds: about one queue's worth of batches."""
        settings = self.settings
        batches = settings.queue_size / settings.max_batch
        return max(1, math.ceil(batches * max(settings.max_delay_ms, 50.0) / 1000.0))

    def queue_full(self) -> Shed:
        """The refusal for a full queue (counted), with a Retry-After estimate."""
        self.metrics.count_rejection(self.name, "queue_full")
        return Shed("queue_full", f"model {self.name!r} has {self.settings.queue_size} requests waiting; retry later",
                    retry_after=self.retry_after())

    def admit(self) -> None:
        """Shed at once, before the body is read or decoded, when the model's queue is already full.

        Under overload most requests are refused here, so refusing costs no upload read and no JPEG
        decode; the batcher's own bounded queue still catches the few that arrive while others decode.
        """
        if self.runner.depth >= self.settings.queue_size:
            raise self.queue_full()

    def overloaded(self, exc: OverloadedError) -> Shed | TooLarge:
        """The refusal of a request over an in-flight limit (counted), with a Retry-After estimate; too large for one
        that needs more than the whole limit, which no wait would admit."""
        self.metrics.count_rejection(self.name, f"inflight_{exc.resource}")
        if isinstance(exc, OverBudgetError):
            return TooLarge("over_memory_budget", str(exc))
        return Shed("overloaded", f"{exc}; retry later", retry_after=self.retry_after())

    def reserve_memory(self, request: Request, nbytes: float) -> None:
        """Reserve ``nbytes`` of working memory for a step of this request, before it runs (503 or 413 if it
        does not fit); given back with the request's other pixels."""
        try:
            self.ticket(request).reserve_pixels(costs.units(nbytes))
        except OverloadedError as exc:
            raise self.overloaded(exc) from None

    def ticket(self, request: Request) -> Ticket:
        """This request's share of the in-flight budget (given back when the request ends)."""
        return request_ticket(request.scope, self.budget)

    def deadline_exceeded(self) -> PastDeadline:
        """The refusal of a request past its deadline (counted)."""
        self.metrics.count_rejection(self.name, "deadline")
        return PastDeadline("deadline_exceeded", f"no answer within {self.settings.timeout_ms:g} ms (--timeout-ms)")

    async def off_loop(self, request: Request, fn: Callable[..., T], *args: Any, stage: str | None = None) -> T:
        """Run a blocking function in the decode pool within the request's deadline: decoding, mask drawing
        and rendering count against it like the queue and the model do (504 past it). ``stage`` names the span
        the call makes in the request's trace (none without it)."""
        start = time.monotonic()
        remaining = self.deadline(request) - start
        if remaining <= 0:
            raise self.deadline_exceeded()
        try:
            result = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args),
                                            remaining)
        except TimeoutError:
            raise self.deadline_exceeded() from None
        if stage is not None:
            tracing.stage(request.scope, stage, start, time.monotonic())
        return result

    def _admit_upload(self, request: Request) -> Ticket:
        """Admit the request if its Content-Length would fit the in-flight budget now (nothing is read for a body
        that would be refused half-way); the bytes themselves are reserved chunk by chunk as they arrive
        (``RequestLimitsMiddleware``), so a client that declares much and sends little holds little."""
        scope = request.scope
        try:
            self.admit()
            declared = declared_length(request)
            if declared:
                try:
                    self.budget.check(nbytes=declared)
                except OverloadedError as exc:
                    raise self.overloaded(exc) from None
        except ServingError as refused:
            tracing.stage(scope, "admission", scope.get(START_KEY, time.monotonic()), time.monotonic(),
                          error=refused.code)
            raise
        tracing.stage(scope, "admission", scope.get(START_KEY, time.monotonic()), time.monotonic())
        return self.ticket(request)

    async def _receive_stage(self, request: Request, reader: Awaitable[T]) -> T:
        """``_read``, recorded as the request's receive stage (the upload's arrival)."""
        start = time.monotonic()
        try:
            return await self._read(reader)
        finally:
            tracing.stage(request.scope, "receive", start, time.monotonic())

    async def _read(self, reader: Awaitable[T]) -> T:
        """Await a body reader, mapping a chunk over the in-flight budget to the 503 answer."""
        try:
            return await reader
        except OverloadedError as exc:
            raise self.overloaded(exc) from None

    async def read_body(self, request: Request) -> bytes:
        """Admit the request and read its whole body (v2), its bytes reserved until the request ends."""
        self._admit_upload(request)
        return await self._receive_stage(request, read_body(request))

    async def receive(self, request: Request, extra_files: tuple[str, ...] = (), draft: bool = True,
                      on_device: bool = False, render_bytes: float = 0.0) -> Received:
        """Admit the request, read its upload, and decode and prepare the image off the event loop.

        ``draft=False`` keeps the full-resolution image (an overlay needs it; a class map alone does not).
        ``on_device`` lets a JPEG the device decoder reproduces be decoded there, in a batch with concurrent
        uploads (the prepared tensor is then a torch tensor on the model's device); other images, and every
        image when the model prepares nothing on a device, take the host path.
        Without it the prepared image holds only the model's tensor, and the request gives back the image's
        bytes and pixels at once; extra files stay reserved until the request ends.
        ``render_bytes`` per pixel of the image's full size is what the route's own later steps hold (an answer
        drawn at the original size): reserved with the decode, from the header, and kept until the request ends,
        as is the full-resolution image when kept.
        """
        ticket = self._admit_upload(request)
        data, extras = await self._receive_stage(request, read_upload(request, extra_files))
        extra_bytes = sum(len(part) for part in extras.values())
        keep_original = not draft
        after = render_bytes + (costs.HELD_RGB_BYTES if keep_original else 0.0)
        try:
            prepared = None
            if on_device and draft and self.runner.decoder is not None:
                prepared = await self._prepare_on_device(request, data, ticket, after)
            elif on_device and draft and self.runner.takes_encoded:
                prepared = await self._keep_encoded(request, data, ticket, after)
                if prepared is not None:  # decoded later, by the inference process: bytes and pixels stay reserved
                    self._decode_stage(request, prepared)
                    return Received(prepared, extras)
            if prepared is None:
                prepared = await self.off_loop(request, prepare_image, data, self.runner.input_size,
                                               self.runner.normaliser, self.settings.max_pixels, draft, keep_original,
                                               ticket.reserve_pixels, after)
        except OverloadedError as exc:
            raise self.overloaded(exc) from None
        self._decode_stage(request, prepared)
        del data  # the body's last reference: the image's bytes are free
        ticket.release_bytes(keep=extra_bytes)
        width, height = prepared.decoded.original_size
        ticket.release_pixels(keep=costs.units(width * height * after))  # the decode's peak is over
        return Received(prepared, extras)

    @staticmethod
    def _decode_stage(request: Request, prepared: PreparedImage) -> None:
        """The decode span: ``prepared.seconds`` (the answer's ``decode_ms``), ending now."""
        end = time.monotonic()
        tracing.stage(request.scope, "decode", end - prepared.seconds, end,
                      {"image.format": prepared.decoded.format or "", "image.width": prepared.decoded.original_size[0],
                       "image.height": prepared.decoded.original_size[1]})

    async def _keep_encoded(self, request: Request, data: bytes, ticket: Ticket,
                            after: float) -> PreparedImage | None:
        """An upload the inference process will decode on its device (an HTTP worker in front of it checks only the
        header and reserves the full-size pixels): its tensor is the JPEG bytes, as a 0-d object array; None for
        an upload the device decoder would not take."""
        start = time.perf_counter()
        size = await self.off_loop(request, device_header, data, self.settings.max_pixels, ticket.reserve_pixels,
                                   after)
        if size is None:
            return None
        encoded = np.empty((), dtype=object)
        encoded[()] = data
        return PreparedImage(DecodedImage(None, size, "JPEG"), encoded, time.perf_counter() - start,
                             self.runner.normaliser)

    async def _prepare_on_device(self, request: Request, data: bytes, ticket: Ticket,
                                 after: float) -> PreparedImage | None:
        """The upload decoded and prepared on the model's device, or None when the device decoder does not take
        it. The header is checked, and the image's full-size pixels reserved, in the decode pool first (the device
        decodes at full size, with no draft reduction)."""
        start = time.perf_counter()
        size = await self.off_loop(request, device_header, data, self.settings.max_pixels, ticket.reserve_pixels,
                                   after)
        if size is None:
            return None
        try:
            tensor = await self.runner.decode(data, self.deadline(request))
        except QueueFullError:
            raise self.queue_full() from None
        except DeadlineExceededError:
            raise self.deadline_exceeded() from None
        except Exception as exc:  # refused or failed on the device: the host decoder decodes it or says why not
            # (nvJPEG refuses some JPEGs libjpeg reads, such as arithmetic-coded ones)
            log.log(logging.DEBUG if isinstance(exc, ImageRejectedError) else logging.WARNING,
                    "model %s: the device decoder did not take an upload (%s: %s); decoding it on the host",
                    self.name, type(exc).__name__, exc)
            ticket.release_pixels()  # the host path reserves what it decodes itself
            return None
        return PreparedImage(DecodedImage(None, size, "JPEG"), tensor, time.perf_counter() - start,
                             self.runner.normaliser)

    def deadline(self, request: Request) -> float:
        """The monotonic instant by which this request must be answered."""
        return request.scope.get(START_KEY, time.monotonic()) + self.settings.timeout_ms / 1000.0

    async def infer(self, request: Request, images: np.ndarray, exclusive: bool = False) -> BatchResult:
        """Outputs for an (n, 3, H, W) stack (or one JPEG the inference process decodes, see ``receive``), batched
        with other requests unless ``exclusive``; 503 when the queue is full or the model fails, 504 past the
        deadline. A request whose client has gone is dropped from the queue before it reaches a batch."""
        annotate(request, model=self.name)
        result = await self._run(request, images, exclusive)
        if result.outputs.dtype == object:  # the inference process decoded the upload: its row, or why it could not
            row = result.outputs[0]
            if isinstance(row, Exception):  # nvJPEG refused it: decode it here and run the tensor
                # No new reservation: the header's (``device_header``: at least 4 B a full-size pixel) stays held
                # and covers a drafted host decode of a JPEG the device takes (under 3.5 B, progressive ones too).
                prepared = await self.off_loop(request, prepare_image, images[0], self.runner.input_size,
                                               self.runner.normaliser, self.settings.max_pixels)
                return await self.infer(request, prepared.tensor[None], exclusive)
            result = dataclasses.replace(result, outputs=row[None])
        annotate(request, batch_size=result.batch_size, queue_ms=round(result.queue_seconds * 1000, 2),
                 inference_ms=round(result.inference_seconds * 1000, 2))
        tracing.set_attributes(request.scope, **{"inference.model": self.name,
                                                 "inference.precision": getattr(self.runner, "precision", ""),
                                                 "inference.batch_size": result.batch_size})
        return result

    async def _run(self, request: Request, images: Any, exclusive: bool) -> BatchResult:
        """The runner's answer, with every way of failing mapped to its HTTP answer; its queue and inference
        stages in the trace, from its submission."""
        submitted = time.monotonic()
        try:
            result = await until_disconnect(request, self.runner(images, self.deadline(request), exclusive))
        except QueueFullError:
            raise self.queue_full() from None
        except DeadlineExceededError:
            raise self.deadline_exceeded() from None
        except ClientGone:
            self.metrics.count_rejection(self.name, "client_gone")
            raise
        except Exception as exc:  # the runtime failed on this batch: log the text, give the client an id
            error_id = new_error_id()
            log.error("model %s failed on a batch (error id %s)", self.name, error_id, exc_info=exc)
            raise Unavailable("inference_failed", f"model {self.name!r} failed on this request; it has been "
                              f"logged (error id {error_id})") from None
        scope = request.scope
        started = submitted + result.queue_seconds
        tracing.stage(scope, "queue", submitted, started)
        tracing.stage(scope, "inference", started, started + result.inference_seconds,
                      {"inference.batch_size": result.batch_size})
        tracing.inference_done(scope, time.monotonic())
        return result


def device_header(data: bytes, max_pixels: int, reserve_pixels: PixelReservation,
                  after_bytes: float = 0.0) -> tuple[int, int] | None:
    """(width, height) of an upload the device decoder takes, its decode (or ``after_bytes`` a pixel, if more)
    reserved; None for any other upload (the host path then decodes it, and answers its errors)."""
    if not data:
        return None
    try:
        image = open_untrusted(data, max_pixels, "image")
    except ImageRejectedError:
        return None
    width, height = image.size
    if not width or not height or not device_decodable(image):
        return None
    reserve_pixels(costs.units(width * height * max(costs.DEVICE_DECODE_BYTES, after_bytes)))
    return width, height


def timing(request: Request, prepared: PreparedImage | None, result: BatchResult) -> dict[str, float]:
    """Milliseconds spent decoding, queued, in inference and in total, plus the batch size; the trace's
    postprocess stage ends now, where ``total_ms`` does."""
    now = time.monotonic()
    total = now - request.scope.get(START_KEY, now)
    tracing.postprocess(request.scope, now)
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
