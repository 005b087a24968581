"""One settings object for the whole server, filled from flags, then ``SERVER_*`` env vars, then defaults."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

BACKENDS = ("onnx", "torchscript")
PRECISIONS = ("auto", "fp32", "int8", "fp16")
FAULTS = ("", "raise", "hang")  # testing only: every batch raises, or never returns
CUDNN_SEARCHES = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")
SWITCHES = ("auto", "on", "off")
ENV_PREFIX = "SERVER_"
CONNECTIONS_PER_REQUEST = 4  # default connection cap per --max-concurrent: idle keep-alive clients, probes
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the server; the app receives one instance through dependencies."""

    store: Path = Path("model_store")
    host: str = "127.0.0.1"
    port: int = 8000
    models: tuple[str, ...] = ()
    default_model: str | None = None
    backend: str = "onnx"
    precision: str = "auto"
    max_alternates: int = 2
    providers: tuple[str, ...] = ()
    max_batch: int = 8
    max_delay_ms: float = 0.0
    batch_buckets: str = "auto"
    device_prepare: str = "auto"
    cudnn_conv_algo_search: str = "HEURISTIC"
    queue_size: int = 64
    timeout_ms: float = 30_000.0
    max_concurrent: int = 1024
    max_connections: int = 0
    read_timeout_s: float = 30.0
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_inflight_bytes: int = 256 * 1024 * 1024
    max_inflight_pixels: int = 400_000_000
    max_response_bytes: int = 64 * 1024 * 1024
    api_key: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False
    allowed_hosts: tuple[str, ...] = ()
    intra_op_threads: int = 0
    workers: int = 1
    http_workers: int = 1
    decode_threads: int = 0
    extra_latency_ms: float = 0.0
    hang_timeout_ms: float = 60_000.0
    failure_limit: int = 3
    shutdown_grace_ms: float = 0.0
    fault: str = ""
    log_level: str = "info"
    data_dir: Path = Path("data")
    trt_cache_dir: Path | None = None
    trt_fp16: bool = False
    max_eval_images: int = 1000
    max_eval_queue: int = 4
    max_eval_history: int = 32
    eval_timeout_s: float = 3600.0
    max_annotation_bytes: int = 64 * 1024 * 1024
    grpc_port: int = 0
    watch: bool = False
    watch_interval_s: float = 2.0
    otlp_endpoint: str | None = None
    trace_sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.backend in BACKENDS, f"backend {self.backend!r} must be one of {', '.join(BACKENDS)}"),
            (self.precision in PRECISIONS, f"precision {self.precision!r} must be one of {', '.join(PRECISIONS)}"),
            (self.backend == "onnx" or self.precision in ("auto", "fp32"),
             f"precision {self.precision} needs the onnx backend (variants are ONNX files)"),
            (self.max_alternates >= 1, f"max alternates {self.max_alternates} must be >= 1"),
            (1 <= self.port <= 65535, f"port {self.port} must lie in 1..65535"),
            (0 <= self.grpc_port <= 65535 and self.grpc_port != self.port,
             f"gRPC port {self.grpc_port} must be 0 (off) or lie in 1..65535 and differ from --port {self.port}"),
            (self.watch_interval_s > 0, f"watch interval {self.watch_interval_s} s must be > 0"),
            (not self.watch or self.http_workers == 1,
             "--watch reloads models in the process that serves them; it needs --http-workers 1"),
            (0.0 <= self.trace_sample_ratio <= 1.0,
             f"trace sample ratio {self.trace_sample_ratio} must lie in 0..1"),
            (self.max_batch >= 1, f"max batch {self.max_batch} must be >= 1"),
            (self.max_delay_ms >= 0, f"max delay {self.max_delay_ms} ms must be >= 0"),
            (self.device_prepare in SWITCHES, f"device prepare {self.device_prepare!r} must be one of "
                                              f"{', '.join(SWITCHES)}"),
            (self.cudnn_conv_algo_search in CUDNN_SEARCHES, f"cuDNN search {self.cudnn_conv_algo_search!r} must be "
                                                            f"one of {', '.join(CUDNN_SEARCHES)}"),
            (self.queue_size >= 1, f"queue size {self.queue_size} must be >= 1"),
            (self.timeout_ms > 0, f"timeout {self.timeout_ms} ms must be > 0"),
            (self.max_concurrent >= 1, f"max concurrent requests {self.max_concurrent} must be >= 1"),
            (self.max_connections == 0 or self.max_connections > self.max_concurrent,
             f"max connections {self.max_connections} must be 0 (automatic) or more than --max-concurrent "
             f"{self.max_concurrent}, or probes would be refused before the request limit applies"),
            (self.read_timeout_s > 0, f"read timeout {self.read_timeout_s} s must be > 0"),
            (self.max_body_bytes >= 1, f"upload limit {self.max_body_bytes} bytes must be >= 1"),
            (self.max_pixels >= 1, f"pixel limit {self.max_pixels} must be >= 1"),
            (self.max_inflight_bytes >= self.max_body_bytes,
             f"in-flight upload limit {self.max_inflight_bytes} bytes must be >= the upload limit "
             f"{self.max_body_bytes} (--max-body-bytes), or the largest upload could never be admitted"),
            (self.max_inflight_pixels >= self.max_pixels,
             f"in-flight pixel limit {self.max_inflight_pixels} must be >= the pixel limit {self.max_pixels} "
             "(--max-pixels), or the largest image could never be admitted"),
            (self.max_response_bytes >= 1, f"response limit {self.max_response_bytes} bytes must be >= 1"),
            (self.intra_op_threads >= 0, f"intra-op threads {self.intra_op_threads} must be >= 0 (0 = all cores)"),
            (self.workers >= 1, f"workers {self.workers} must be >= 1"),
            (self.http_workers >= 1, f"HTTP workers {self.http_workers} must be >= 1"),
            (self.decode_threads >= 0, f"decode threads {self.decode_threads} must be >= 0 (0 = all cores)"),
            (self.extra_latency_ms >= 0, f"extra latency {self.extra_latency_ms} ms must be >= 0"),
            (self.hang_timeout_ms > 0, f"hang timeout {self.hang_timeout_ms} ms must be > 0"),
            (self.failure_limit >= 1, f"failure limit {self.failure_limit} must be >= 1"),
            (self.shutdown_grace_ms >= 0, f"shutdown grace {self.shutdown_grace_ms} ms must be >= 0 "
                                          "(0 = the request timeout)"),
            (self.fault in FAULTS, f"fault {self.fault!r} must be one of {', '.join(map(repr, FAULTS))}"),
            (self.api_key is None or len(self.api_key) > 0, "api key must not be empty (leave it unset instead)"),
            (self.api_key is not None or self.allow_unauthenticated or is_loopback(self.host),
             f"binding {self.host} without an API key would serve anyone who can reach it; set --api-key (or "
             "SERVER_API_KEY), or --allow-unauthenticated true behind a gateway that authenticates"),
            (self.max_eval_images >= 1, f"max evaluation images {self.max_eval_images} must be >= 1"),
            (self.max_eval_queue >= 1, f"max queued evaluations {self.max_eval_queue} must be >= 1"),
            (self.max_eval_history >= 0, f"evaluation history {self.max_eval_history} must be >= 0"),
            (self.eval_timeout_s > 0, f"evaluation timeout {self.eval_timeout_s} s must be > 0"),
            (self.max_annotation_bytes >= 1, f"annotation file limit {self.max_annotation_bytes} bytes must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.bucket_sizes(gpu=True)  # a malformed --batch-buckets fails at start, not at the first model

    def bucket_sizes(self, gpu: bool) -> tuple[int, ...]:
        """The batch sizes batches are padded to (empty: no padding). ``auto`` pads on a GPU only, to 1, 2, 4, ...
        and --max-batch: a GPU runtime pays an algorithm search or engine build for every new shape, while on a CPU
        padding only adds work. An explicit list always gains --max-batch as its last bucket."""
        text = self.batch_buckets.strip().lower()
        if text == "off" or (text == "auto" and not gpu):
            return ()
        if text == "auto":
            return tuple(sorted({*(2 ** k for k in range(self.max_batch.bit_length()) if 2 ** k < self.max_batch),
                                 self.max_batch}))
        try:
            sizes = {int(item) for item in text.split(",") if item.strip()}
        except ValueError:
            sizes = {0}
        if not sizes or min(sizes) < 1 or max(sizes) > self.max_batch:
            raise ValueError(f"batch buckets {self.batch_buckets!r} must be auto, off or a comma list of sizes in "
                             f"1..{self.max_batch} (--max-batch)")
        return tuple(sorted(sizes | {self.max_batch}))

    @property
    def connection_limit(self) -> int:
        """Open connections accepted before every new one gets a 503 (probes included): --max-connections, else
        four per --max-concurrent, room for idle keep-alive clients and probes."""
        return self.max_connections or self.max_concurrent * CONNECTIONS_PER_REQUEST

    @property
    def host_patterns(self) -> tuple[str, ...]:
        """The Host header values accepted (``*`` any): --allowed-hosts, else this machine's names on a loopback
        --host (a web page whose name resolves to 127.0.0.1 cannot reach the server), else any."""
        if self.allowed_hosts:
            return self.allowed_hosts
        return LOOPBACK_NAMES if is_loopback(self.host) else ("*",)

    @property
    def threads(self) -> int:
        """Intra-op threads per worker (0 means the available cores shared among the workers)."""
        return self.intra_op_threads or max(1, available_cores() // self.workers)

    @property
    def shutdown_grace_seconds(self) -> float:
        """How long a shutdown waits for in-flight requests (default: the request timeout)."""
        return (self.shutdown_grace_ms or self.timeout_ms) / 1000.0

    @property
    def decode_workers(self) -> int:
        """Threads that decode and resize images (0 means every available core)."""
        return self.decode_threads or available_cores()

    def batching(self) -> dict[str, Any]:
        """How each model's requests are batched and bounded, as /models shows it."""
        return {"max_batch": self.max_batch, "max_delay_ms": self.max_delay_ms, "queue_size": self.queue_size,
                "workers": self.workers, "timeout_ms": self.timeout_ms}

    def public(self) -> dict[str, Any]:
        """Settings as JSON-ready data, without the API key."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
        out["store"], out["data_dir"] = str(self.store), str(self.data_dir)
        out["trt_cache_dir"] = str(self.trt_cache_dir) if self.trt_cache_dir else None
        out["models"], out["providers"] = list(self.models), list(self.providers)
        out["api_key_required"] = self.api_key is not None
        return out


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(value)
    return lowered in ("true", "1", "yes")


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


# flag -> (Settings field, type parser, help). The env var is SERVER_<FIELD upper-cased>.
OPTIONS: dict[str, tuple[str, Any, str]] = {
    "--store": ("store", Path, "model store folder written by `python -m export`"),
    "--host": ("host", str, "interface to bind (keep 127.0.0.1 unless behind a proxy)"),
    "--port": ("port", int, "TCP port"),
    "--models": ("models", _comma_list, "comma list of model names to serve (default: every model in the store)"),
    "--default-model": ("default_model", str,
                        "model used when a request has no model= (default: the first model of the endpoint's task)"),
    "--backend": ("backend", str, f"runtime: {' | '.join(BACKENDS)} (torchscript needs model.pt in the entry)"),
    "--precision": ("precision", str, "auto | fp32 | int8 | fp16: auto serves the fastest variant the accuracy guard "
                                      "accepted for the provider (int8 on CPU, fp16 on CUDA/TensorRT), else fp32"),
    "--max-alternates": ("max_alternates", int, "other precisions of a model kept loaded for comparisons "
                                                "(/robustness?precision=); the least recently used is closed "
                                                "beyond this many, across all models"),
    "--providers": ("providers", _comma_list,
                    "ONNX Runtime providers in order, e.g. cuda,cpu (default: TensorRT, CUDA, CPU, whichever exist)"),
    "--max-batch": ("max_batch", int, "largest batch the micro-batcher forms"),
    "--max-delay-ms": ("max_delay_ms", float, "longest a request waits for companions before its batch runs (0: an "
                                              "idle model runs a request at once; batches form from what queues "
                                              "while it is busy)"),
    "--batch-buckets": ("batch_buckets", str, "auto | off | comma list: pad batches to these sizes, each run once at "
                                              "load (auto: 1, 2, 4, ... --max-batch on a GPU, off on a CPU)"),
    "--device-prepare": ("device_prepare", str,
                         "auto | on | off: decode JPEGs (nvJPEG, in batches) and make /robustness copies on the "
                         "model's device (auto: when it runs on a GPU; on: also on a CPU, through the same torch "
                         "code)"),
    "--cudnn-conv-algo-search": ("cudnn_conv_algo_search", str,
                                 "CUDA provider: HEURISTIC | EXHAUSTIVE | DEFAULT convolution algorithm choice "
                                 "(EXHAUSTIVE times every algorithm per new shape: up to 1.3 s per bucket at load)"),
    "--queue-size": ("queue_size", int, "requests waiting per model; beyond it the server answers 503 at once"),
    "--timeout-ms": ("timeout_ms", float, "per-request deadline from arrival to answer; past it: 504"),
    "--max-concurrent": ("max_concurrent", int,
                         "HTTP requests in flight at once (health and metrics exempt); beyond it: 503 at once"),
    "--max-connections": ("max_connections", int,
                          "open connections accepted at once, idle ones included; beyond it uvicorn answers 503 to "
                          "every request, probes included (0: 4 x --max-concurrent)"),
    "--read-timeout-s": ("read_timeout_s", float,
                         "a request's headers, then its body, must arrive within this many seconds; past it: 408 "
                         "and the connection closes"),
    "--max-body-bytes": ("max_body_bytes", int, "upload limit, enforced while the body streams in: 413"),
    "--max-pixels": ("max_pixels", int, "largest width*height accepted, checked from the header before decoding: 413"),
    "--max-inflight-bytes": ("max_inflight_bytes", int,
                             "upload bytes all requests in flight may hold together; past it: 503 overloaded"),
    "--max-inflight-pixels": ("max_inflight_pixels", int,
                              "image working memory all requests in flight may hold together, in pixels of 4 bytes "
                              "(an RGB pixel as Pillow holds it): each step reserves its measured bytes per pixel "
                              "before it runs (decodes from the header); past it: 503 overloaded"),
    "--max-response-bytes": ("max_response_bytes", int,
                             "largest answer built (KServe v2 outputs), counted from the output shape before the "
                             "model runs; past it: 413 response_too_large"),
    "--api-key": ("api_key", str, "require 'Authorization: Bearer KEY' on model endpoints (health stays open)"),
    "--allow-unauthenticated": ("allow_unauthenticated", _flag,
                                "true: serve a non-loopback --host without --api-key (behind a gateway that "
                                "authenticates); otherwise such a start is refused"),
    "--allowed-hosts": ("allowed_hosts", _comma_list,
                        "Host header values accepted, e.g. api.example.com,*.example.com (default: localhost, "
                        "127.0.0.1 and ::1 on a loopback --host, else any); others: 400"),
    "--intra-op-threads": ("intra_op_threads", int, "runtime threads per batch (0 = all cores / workers)"),
    "--workers": ("workers", int, "batches of one model that may run at the same time (each with its own threads)"),
    "--http-workers": ("http_workers", int, "HTTP worker processes in front of one inference process that owns the "
                                            "models (1: one process does both)"),
    "--decode-threads": ("decode_threads", int, "threads for image decoding and resizing (0 = all cores)"),
    "--extra-latency-ms": ("extra_latency_ms", float,
                           "testing only: sleep this long in every batch, to simulate a slower model"),
    "--hang-timeout-ms": ("hang_timeout_ms", float,
                          "a batch running longer marks its model unhealthy (503 until it recovers)"),
    "--failure-limit": ("failure_limit", int, "batches failing in a row that mark a model unhealthy"),
    "--shutdown-grace-ms": ("shutdown_grace_ms", float,
                            "on SIGTERM, wait this long for in-flight requests (0 = --timeout-ms)"),
    "--fault": ("fault", str, "testing only: 'raise' makes every batch fail, 'hang' makes every batch hang"),
    "--log-level": ("log_level", str, "debug | info | warning | error"),
    "--trt-cache-dir": ("trt_cache_dir", Path, "TensorRT provider: keep built engines and the timing cache here "
                                               "(a restart then skips the engine build)"),
    "--trt-fp16": ("trt_fp16", _flag, "TensorRT provider: let it build FP16 engines (true/false)"),
    "--data-dir": ("data_dir", Path, "datasets POST /evaluations may read, named relative to this folder "
                                     "(nothing outside it is readable)"),
    "--max-eval-images": ("max_eval_images", int, "most test images one evaluation job reads"),
    "--max-eval-queue": ("max_eval_queue", int, "evaluations queued or running at once; beyond it: 429"),
    "--max-eval-history": ("max_eval_history", int, "finished evaluations whose reports stay readable"),
    "--eval-timeout-s": ("eval_timeout_s", float, "wall-clock limit of one evaluation's work (loading its dataset, "
                                                  "evaluating, statistics, report); past it the job fails as "
                                                  "timed out"),
    "--max-annotation-bytes": ("max_annotation_bytes", int, "largest annotation file (JSON list, COCO instances, "
                                                            "split list) an evaluation reads; larger: 413"),
    "--grpc-port": ("grpc_port", int, "also serve KServe v2 over gRPC (GRPCInferenceService) on this port, with the "
                                      "same limits, API key (metadata 'authorization') and metrics (0: off)"),
    "--watch": ("watch", _flag, "true: reload an entry whose files change in the store, and load new entries "
                                "(the old version answers until the new one is warm)"),
    "--watch-interval-s": ("watch_interval_s", float, "how often --watch looks at the store"),
    "--otlp-endpoint": ("otlp_endpoint", str, "send each request's spans (admission, decode, queue, inference, "
                                              "postprocess) to this OTLP/HTTP collector, e.g. "
                                              "http://127.0.0.1:4318/v1/traces (unset: no export; W3C traceparent is "
                                              "still read and echoed, and logs carry the trace id)"),
    "--trace-sample-ratio": ("trace_sample_ratio", float, "share of requests without a sampled parent whose spans are "
                                                          "exported (0..1)"),
}


def env_name(field_name: str) -> str:
    """The environment variable that sets a field, e.g. ``max_batch`` -> ``SERVER_MAX_BATCH``."""
    return ENV_PREFIX + field_name.upper()


def build_parser() -> argparse.ArgumentParser:
    """Argument parser whose --help lists every flag, its env var and its default."""
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve exported models from a model store: /predict, /segment, /robustness, KServe v2, /metrics.",
        epilog="Precedence: flag, then environment variable, then default. "
               "Example: python -m server --store model_store --port 8000 --max-batch 8",
    )
    defaults = Settings()
    for flag, (name, _, text) in OPTIONS.items():
        default = getattr(defaults, name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        shown = "unset" if shown in ("", None) or name == "api_key" else shown
        parser.add_argument(flag, dest=name, default=None, metavar=name.upper(),
                            help=f"{text} [env {env_name(name)}; default: {shown}]")
    return parser


def settings_from(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Combine parsed flags, environment variables and defaults; ValueError names a bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for flag, (name, parse, _) in OPTIONS.items():
        raw = getattr(args, name, None) if args is not None else None
        source = flag
        if raw is None and env_name(name) in environ:
            raw, source = environ[env_name(name)], env_name(name)
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except ValueError:
            raise ValueError(f"{source}={raw!r} is not a valid {parse.__name__.lstrip('_')}") from None
    return Settings(**values)


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse a command line (plus environment) into Settings."""
    return settings_from(build_parser().parse_args(argv), environ)
