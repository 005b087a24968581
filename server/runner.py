"""A model runner shaped like a Ray Serve deployment: load once in ``__init__``, batched async ``__call__``.

Under uvicorn the registry builds one runner per model; under Ray the same class can be wrapped with
``serve.deployment`` unchanged, since scaling is configuration, not code.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from common.preprocess import InputNormaliser
from model_store.manifest import TORCHSCRIPT_FILE, Manifest, Precision, verified_artifact
from server.batching import (
    BatchObservers,
    BatchPolicy,
    BatchResult,
    DeadlineExceededError,
    MicroBatcher,
    QueueFullError,
)
from server.fault_injection import with_faults
from server.precision import Selection, listed_variant, select_precision
from server.prometheus import ServerMetrics
from server.runtimes import Backend, OnnxBackend, TorchScriptBackend, choose_providers, runs_on_gpu
from server.settings import Settings

log = logging.getLogger("server.runner")


def first_provider(settings: Settings) -> str:
    """The ONNX Runtime provider that will run the graph under these settings."""
    return choose_providers(ort.get_available_providers(), settings.providers)[0]


def select_artifact(manifest: Manifest, settings: Settings, precision: Precision | None = None) -> Selection:
    """The artifact ``--precision`` (or ``precision``: any listed variant, for comparisons) selects."""
    if precision is not None and settings.backend == "onnx":
        return listed_variant(manifest, precision)
    provider = first_provider(settings) if settings.backend == "onnx" else settings.backend
    return select_precision(manifest, settings.precision if precision is None else precision, provider,
                            settings.backend)


def load_backend(manifest: Manifest, settings: Settings, selection: Selection) -> Backend:
    """Open the selected artifact for the configured backend."""
    if settings.backend == "torchscript":
        return TorchScriptBackend(verified_artifact(manifest, TORCHSCRIPT_FILE), threads=settings.threads)
    if settings.backend == "onnx":
        return OnnxBackend(verified_artifact(manifest, selection.file), manifest.input.name, manifest.output.name,
                           providers=settings.providers, threads=settings.threads,
                           trt_cache_dir=settings.trt_cache_dir, trt_fp16=settings.trt_fp16,
                           cudnn_conv_algo_search=settings.cudnn_conv_algo_search)
    raise ValueError(f"backend {settings.backend!r} must be 'onnx' or 'torchscript'")


def warmup_jpeg(height: int, width: int) -> bytes:
    """A JPEG of the model's input size, for warming up the device decoder."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (128, 96, 64)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def prepare_device(settings: Settings, provider: str) -> str | None:
    """Where uploads are decoded and /robustness copies made, when not on the host: the model's GPU (``auto``, when
    torch sees it), or the CPU through the same torch code (``on`` without a GPU); None keeps the host path."""
    if settings.device_prepare == "off":
        return None
    if runs_on_gpu(provider):
        import torch

        if torch.cuda.is_available():
            return "cuda"
        log.warning("the model runs on %s but torch sees no CUDA device: uploads are prepared on the host", provider)
    return "cpu" if settings.device_prepare == "on" else None


HealthObserver = Callable[[str, str | None], None]  # (model name, why it is unhealthy, or None when healthy)


class ModelRunner:
    """One exported model: its session, its inference threads, its micro-batcher and its health.

    The model turns unhealthy when ``failure_limit`` batches in a row raise, or when one batch runs past
    ``hang_timeout_ms``; the next batch that succeeds makes it healthy again.
    """

    def __init__(self, manifest: Manifest, settings: Settings, metrics: ServerMetrics | None = None,
                 on_health: HealthObserver | None = None, backend: Backend | None = None,
                 selection: Selection | None = None) -> None:
        self.manifest, self.settings, self.metrics, self.on_health = manifest, settings, metrics, on_health
        self.failures = 0
        self.unhealthy: str | None = None
        self.stopping = threading.Event()
        self.normaliser = InputNormaliser(manifest.input.mean, manifest.input.std)
        self.selection = selection or select_artifact(manifest, settings)
        self.backend = backend or load_backend(manifest, settings, self.selection)
        self.serving = with_faults(self.backend, settings, self.stopping)  # what served batches run on
        # an HTTP worker's backend whose inference process decodes JPEG uploads on its device
        self.takes_encoded = bool(getattr(self.backend, "takes_encoded", False))
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix=f"infer-{manifest.name}")
        self.buckets = settings.bucket_sizes(gpu=runs_on_gpu(self.backend.provider))
        self.device = prepare_device(settings, self.backend.provider)
        self.preparer: Any = None  # a DevicePreparer when uploads are decoded on self.device
        self.decode_executor: ThreadPoolExecutor | None = None
        if self.device is not None:
            from server.device_images import DevicePreparer  # torch and torchvision: only on the device path

            self.preparer = DevicePreparer(manifest.input_size, manifest.input.mean, manifest.input.std, self.device)
            self.decode_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{manifest.name}")
        self.pipeline: Any = None  # the app's RequestPipeline for this runner, made on first use (server.dependencies)
        self.batcher: MicroBatcher | None = None
        self.decoder: MicroBatcher | None = None
        self.warm = False

    @property
    def name(self) -> str:
        """Model name in the store."""
        return self.manifest.name

    @property
    def precision(self) -> Precision:
        """The precision this runner serves: fp32, int8 or fp16."""
        return self.selection.precision

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model is fed at."""
        return self.manifest.input_size

    @property
    def depth(self) -> int:
        """Requests waiting in this model's queue."""
        return self.batcher.depth if self.batcher is not None else 0

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Synchronous forward pass on a float32 NCHW batch (runs in the inference thread)."""
        return self.serving.run(images)

    def _health(self, reason: str | None) -> None:
        if reason != self.unhealthy:
            self.unhealthy = reason
            if self.on_health is not None:
                self.on_health(self.name, reason)

    def _outcome(self, error: BaseException | None) -> None:
        """After each batch: a success clears the failure count, too many failures in a row mark it unhealthy."""
        if error is None:
            self.failures = 0
            self._health(None)
            return
        if isinstance(error, QueueFullError | DeadlineExceededError):  # shed by a busy inference process: not ill
            return
        self.failures += 1
        if self.failures >= self.settings.failure_limit:
            self._health(f"{self.failures} batches in a row failed (last: {type(error).__name__})")

    def _hung(self, seconds: float) -> None:
        self._health(f"a batch has run for more than {seconds:g} s (--hang-timeout-ms)")

    def warmup(self, runs: int = 3) -> None:
        """Run every batch size the model will meet a few times before it is ready: each bucket when batches are
        padded (a GPU searches algorithms or builds engines per new shape), else the largest and the smallest
        (TorchScript optimises over its first calls; ONNX Runtime on a CPU needs one run of each)."""
        height, width = self.input_size
        if not self.buckets and self.backend.kind == "onnx":
            runs = 1  # ONNX Runtime on a CPU compiles nothing per shape: one run sets up its memory
        for n in sorted(set(self.buckets) or {self.settings.max_batch, 1}, reverse=True):
            for _ in range(runs):
                self.backend.run(np.zeros((n, 3, height, width), dtype=np.float32))
        if self.preparer is not None:  # the decoder's first batches set up nvJPEG and its buffers
            sample = warmup_jpeg(height, width)
            for n in sorted({self.settings.max_batch, 1}, reverse=True):
                self.backend.run(self.preparer.prepare([sample] * n))
        self.warm = True

    def decode_batch(self, encoded: np.ndarray) -> np.ndarray:
        """Decode uploads together on the device (runs in the decode thread): per upload its (3, H, W) tensor, or
        the ImageRejectedError that refused it (the others are decoded again without it)."""
        from server.device_images import DeviceImageRejectedError

        rows = np.empty(len(encoded), dtype=object)
        pending = list(range(len(encoded)))
        while pending:
            try:
                prepared = self.preparer.prepare([encoded[i] for i in pending])
            except DeviceImageRejectedError as exc:
                rows[pending.pop(exc.index)] = exc
                continue
            for row, index in enumerate(pending):
                rows[index] = prepared[row]
            break
        return rows

    async def decode(self, data: bytes, deadline: float | None = None) -> Any:
        """One JPEG upload as the model's (3, H, W) input on the device, decoded in a batch with concurrent uploads;
        raises the ImageRejectedError of bytes the decoder refuses."""
        if self.decoder is None:
            raise RuntimeError(f"model {self.name!r} decodes no uploads on a device")
        encoded = np.empty(1, dtype=object)
        encoded[0] = data
        row = (await self.decoder.submit(encoded, deadline)).outputs[0]
        if isinstance(row, Exception):
            raise row
        return row

    def start(self) -> None:
        """Create the micro-batcher on the running event loop."""
        metrics, name = self.metrics, self.name
        settings = self.settings
        policy = BatchPolicy(settings.max_batch, settings.max_delay_ms / 1000.0, settings.queue_size,
                             settings.workers, settings.hang_timeout_ms / 1000.0, self.buckets)
        self.batcher = MicroBatcher(self.infer, self.executor, policy, BatchObservers(
            on_batch=(lambda size, seconds: metrics.observe_batch(name, size, seconds)) if metrics else None,
            on_depth=(lambda depth: metrics.set_queue_depth(name, depth)) if metrics else None,
            on_running=(lambda running: metrics.set_running(name, running)) if metrics else None,
            on_outcome=self._outcome, on_hang=self._hung,
        ))
        self.batcher.start()
        if self.preparer is not None:
            self.decoder = MicroBatcher(self.decode_batch, self.decode_executor,
                                        BatchPolicy(settings.max_batch, queue_size=settings.queue_size))
            self.decoder.start()
        if metrics:  # both gauges exist (at 0) from the start, not only after the first request
            metrics.set_queue_depth(name, 0)
            metrics.set_running(name, 0)

    async def __call__(self, images: np.ndarray, deadline: float | None = None, exclusive: bool = False) -> BatchResult:
        """Outputs for an (n, 3, H, W) stack, batched with concurrent calls unless ``exclusive``."""
        if self.batcher is None:
            raise RuntimeError(f"model {self.name!r} is not started")
        return await self.batcher.submit(images, deadline, exclusive)

    async def stop(self) -> None:
        """Stop batching and release the inference thread."""
        self.stopping.set()
        for batcher in (self.batcher, self.decoder):
            if batcher is not None:
                await batcher.stop()
        for executor in (self.executor, self.decode_executor):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        """Runtime facts for /models."""
        return {
            "backend": self.backend.kind,
            "provider": self.backend.provider,
            "providers": list(self.backend.providers),
            "batching": {**self.settings.batching(), "buckets": list(self.buckets)},
            "precision": self.selection.precision,
            "served": self.selection.describe(self.settings.precision),
            "device_prepare": self.device,
        }
