"""One settings object for the whole server, filled from flags, then ``SERVER_*`` env vars, then defaults."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.compute import available_cores
from model_store.manifest import PRECISION_NAMES, Precision

BACKENDS = ("onnx", "torchscript")
AUTO = "auto"  # --precision: the fastest variant the guard accepted for the provider
PRECISIONS = (AUTO, *PRECISION_NAMES)
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


def requested_precision(value: str) -> Precision | str:
    """A --precision word as the server passes it on: AUTO, or the Precision it names (ValueError for another)."""
    return AUTO if value == AUTO else Precision(value)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(value)
    return lowered in ("true", "1", "yes")


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


Check = tuple[Callable[[Any], bool], Callable[[Any], str]]  # (is the value valid, what is wrong with it)


def option(default: Any, flag: str, parse: Callable[[str], Any], text: str, check: Check | None = None,
           **field_options: Any) -> Any:
    """A Settings field declared once: its default, its flag, how its text is parsed, its help and its check
    (the environment variable is SERVER_<FIELD>)."""
    return field(default=default, metadata={"flag": flag, "parse": parse, "help": text, "check": check},
                 **field_options)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the server; the app receives one instance through dependencies."""

    store: Path = option(
        Path("model_store"), "--store", Path,
        "model store folder written by `python -m export`")
    host: str = option(
        "127.0.0.1", "--host", str,
        "interface to bind (keep 127.0.0.1 unless behind a proxy)")
    port: int = option(
        8000, "--port", int,
        "TCP port",
        check=(lambda v: 1 <= v <= 65535,
               lambda v: f"port {v} must lie in 1..65535"))
    models: tuple[str, ...] = option(
        (), "--models", _comma_list,
        "comma list of model names to serve (default: every model in the store)")
    default_model: str | None = option(
        None, "--default-model", str,
        "model used when a request has no model= (default: the first model of the endpoint's task)")
    backend: str = option(
        "onnx", "--backend", str,
        f"runtime: {' | '.join(BACKENDS)} (torchscript needs model.pt in the entry)",
        check=(lambda v: v in BACKENDS,
               lambda v: f"backend {v!r} must be one of {', '.join(BACKENDS)}"))
    precision: Precision | str = option(  # a Precision or AUTO once constructed
        AUTO, "--precision", str,
        "auto | fp32 | int8 | fp16: auto serves the fastest variant the accuracy guard accepted for the provider "
        "(int8 on CPU, fp16 on CUDA/TensorRT), else fp32",
        check=(lambda v: v in PRECISIONS,
               lambda v: f"precision {v!r} must be one of {', '.join(PRECISIONS)}"))
    max_alternates: int = option(
        2, "--max-alternates", int,
        "other precisions of a model kept loaded for comparisons (/robustness?precision=); the least recently used "
        "is closed beyond this many, across all models",
        check=(lambda v: v >= 1,
               lambda v: f"max alternates {v} must be >= 1"))
    providers: tuple[str, ...] = option(
        (), "--providers", _comma_list,
        "ONNX Runtime providers in order, e.g. cuda,cpu (default: TensorRT, CUDA, CPU, whichever exist)")
    max_batch: int = option(
        8, "--max-batch", int,
        "largest batch the micro-batcher forms",
        check=(lambda v: v >= 1,
               lambda v: f"max batch {v} must be >= 1"))
    max_delay_ms: float = option(
        0.0, "--max-delay-ms", float,
        "longest a request waits for companions before its batch runs (0: an idle model runs a request at once; "
        "batches form from what queues while it is busy)",
        check=(lambda v: v >= 0,
               lambda v: f"max delay {v} ms must be >= 0"))
    batch_buckets: str = option(
        "auto", "--batch-buckets", str,
        "auto | off | comma list: pad batches to these sizes, each run once at load (auto: 1, 2, 4, ... --max-batch "
        "on a GPU, off on a CPU)")
    device_prepare: str = option(
        "auto", "--device-prepare", str,
        "auto | on | off: decode JPEGs (nvJPEG, in batches) and make /robustness copies on the model's device (auto: "
        "when it runs on a GPU; on: also on a CPU, through the same torch code)",
        check=(lambda v: v in SWITCHES,
               lambda v: f"device prepare {v!r} must be one of {', '.join(SWITCHES)}"))
    cudnn_conv_algo_search: str = option(
        "HEURISTIC", "--cudnn-conv-algo-search", str,
        "CUDA provider: HEURISTIC | EXHAUSTIVE | DEFAULT convolution algorithm choice (EXHAUSTIVE times every "
        "algorithm per new shape: up to 1.3 s per bucket at load)",
        check=(lambda v: v in CUDNN_SEARCHES,
               lambda v: f"cuDNN search {v!r} must be one of {', '.join(CUDNN_SEARCHES)}"))
    queue_size: int = option(
        64, "--queue-size", int,
        "requests waiting per model; beyond it the server answers 503 at once",
        check=(lambda v: v >= 1,
               lambda v: f"queue size {v} must be >= 1"))
    timeout_ms: float = option(
        30_000.0, "--timeout-ms", float,
        "per-request deadline from arrival to answer; past it: 504",
        check=(lambda v: v > 0,
               lambda v: f"timeout {v} ms must be > 0"))
    max_concurrent: int = option(
        1024, "--max-concurrent", int,
        "HTTP requests in flight at once (health and metrics exempt); beyond it: 503 at once",
        check=(lambda v: v >= 1,
               lambda v: f"max concurrent requests {v} must be >= 1"))
    max_connections: int = option(
        0, "--max-connections", int,
        "open connections accepted at once, idle ones included; beyond it uvicorn answers 503 to every request, "
        "probes included (0: 4 x --max-concurrent)")
    read_timeout_s: float = option(
        30.0, "--read-timeout-s", float,
        "a request's headers, then its body, must arrive within this many seconds; past it: 408 and the connection "
        "closes",
        check=(lambda v: v > 0,
               lambda v: f"read timeout {v} s must be > 0"))
    max_body_bytes: int = option(
        20 * 1024 * 1024, "--max-body-bytes", int,
        "upload limit, enforced while the body streams in: 413",
        check=(lambda v: v >= 1,
               lambda v: f"upload limit {v} bytes must be >= 1"))
    max_pixels: int = option(
        40_000_000, "--max-pixels", int,
        "largest width*height accepted, checked from the header before decoding: 413",
        check=(lambda v: v >= 1,
               lambda v: f"pixel limit {v} must be >= 1"))
    max_inflight_bytes: int = option(
        256 * 1024 * 1024, "--max-inflight-bytes", int,
        "upload bytes all requests in flight may hold together; past it: 503 overloaded")
    max_inflight_pixels: int = option(
        400_000_000, "--max-inflight-pixels", int,
        "image working memory all requests in flight may hold together, in pixels of 4 bytes (an RGB pixel as Pillow "
        "holds it): each step reserves its measured bytes per pixel before it runs (decodes from the header); past "
        "it: 503 overloaded")
    max_response_bytes: int = option(
        64 * 1024 * 1024, "--max-response-bytes", int,
        "largest answer built (KServe v2 outputs), counted from the output shape before the model runs; past it: 413 "
        "response_too_large",
        check=(lambda v: v >= 1,
               lambda v: f"response limit {v} bytes must be >= 1"))
    api_key: str | None = option(
        None, "--api-key", str,
        "require 'Authorization: Bearer KEY' on model endpoints (health stays open)",
        check=(lambda v: v is None or len(v) > 0,
               lambda v: "api key must not be empty (leave it unset instead)"),
        repr=False)
    allow_unauthenticated: bool = option(
        False, "--allow-unauthenticated", _flag,
        "true: serve a non-loopback --host without --api-key (behind a gateway that authenticates); otherwise such a "
        "start is refused")
    allowed_hosts: tuple[str, ...] = option(
        (), "--allowed-hosts", _comma_list,
        "Host header values accepted, e.g. api.example.com,*.example.com (default: localhost, 127.0.0.1 and ::1 on a "
        "loopback --host, else any); others: 400")
    intra_op_threads: int = option(
        0, "--intra-op-threads", int,
        "runtime threads per batch (0 = all cores / workers)",
        check=(lambda v: v >= 0,
               lambda v: f"intra-op threads {v} must be >= 0 (0 = all cores)"))
    workers: int = option(
        1, "--workers", int,
        "batches of one model that may run at the same time (each with its own threads)",
        check=(lambda v: v >= 1,
               lambda v: f"workers {v} must be >= 1"))
    http_workers: int = option(
        1, "--http-workers", int,
        "HTTP worker processes in front of one inference process that owns the models (1: one process does both)",
        check=(lambda v: v >= 1,
               lambda v: f"HTTP workers {v} must be >= 1"))
    decode_threads: int = option(
        0, "--decode-threads", int,
        "threads for image decoding and resizing (0 = all cores)",
        check=(lambda v: v >= 0,
               lambda v: f"decode threads {v} must be >= 0 (0 = all cores)"))
    extra_latency_ms: float = option(
        0.0, "--extra-latency-ms", float,
        "testing only: sleep this long in every batch, to simulate a slower model",
        check=(lambda v: v >= 0,
               lambda v: f"extra latency {v} ms must be >= 0"))
    hang_timeout_ms: float = option(
        60_000.0, "--hang-timeout-ms", float,
        "a batch running longer marks its model unhealthy (503 until it recovers)",
        check=(lambda v: v > 0,
               lambda v: f"hang timeout {v} ms must be > 0"))
    failure_limit: int = option(
        3, "--failure-limit", int,
        "batches failing in a row that mark a model unhealthy",
        check=(lambda v: v >= 1,
               lambda v: f"failure limit {v} must be >= 1"))
    shutdown_grace_ms: float = option(
        0.0, "--shutdown-grace-ms", float,
        "on SIGTERM, wait this long for in-flight requests (0 = --timeout-ms)",
        check=(lambda v: v >= 0,
               lambda v: f"shutdown grace {v} ms must be >= 0 (0 = the request timeout)"))
    fault: str = option(
        "", "--fault", str,
        "testing only: 'raise' makes every batch fail, 'hang' makes every batch hang",
        check=(lambda v: v in FAULTS,
               lambda v: f"fault {v!r} must be one of {', '.join(map(repr, FAULTS))}"))
    log_level: str = option(
        "info", "--log-level", str,
        "debug | info | warning | error")
    trt_cache_dir: Path | None = option(
        None, "--trt-cache-dir", Path,
        "TensorRT provider: keep built engines and the timing cache here (a restart then skips the engine build)")
    trt_fp16: bool = option(
        False, "--trt-fp16", _flag,
        "TensorRT provider: let it build FP16 engines (true/false)")
    data_dir: Path = option(
        Path("data"), "--data-dir", Path,
        "datasets POST /evaluations may read, named relative to this folder (nothing outside it is readable)")
    max_eval_images: int = option(
        1000, "--max-eval-images", int,
        "most test images one evaluation job reads",
        check=(lambda v: v >= 1,
               lambda v: f"max evaluation images {v} must be >= 1"))
    max_eval_queue: int = option(
        4, "--max-eval-queue", int,
        "evaluations queued or running at once; beyond it: 429",
        check=(lambda v: v >= 1,
               lambda v: f"max queued evaluations {v} must be >= 1"))
    max_eval_history: int = option(
        32, "--max-eval-history", int,
        "finished evaluations whose reports stay readable",
        check=(lambda v: v >= 0,
               lambda v: f"evaluation history {v} must be >= 0"))
    eval_timeout_s: float = option(
        3600.0, "--eval-timeout-s", float,
        "wall-clock limit of one evaluation's work (loading its dataset, evaluating, statistics, report); past it "
        "the job fails as timed out",
        check=(lambda v: v > 0,
               lambda v: f"evaluation timeout {v} s must be > 0"))
    max_annotation_bytes: int = option(
        64 * 1024 * 1024, "--max-annotation-bytes", int,
        "largest annotation file (JSON list, COCO instances, split list) an evaluation reads; larger: 413",
        check=(lambda v: v >= 1,
               lambda v: f"annotation file limit {v} bytes must be >= 1"))
    grpc_port: int = option(
        0, "--grpc-port", int,
        "also serve KServe v2 over gRPC (GRPCInferenceService) on this port, with the same limits, API key (metadata "
        "'authorization') and metrics (0: off)")
    watch: bool = option(
        False, "--watch", _flag,
        "true: reload an entry whose files change in the store, and load new entries (the old version answers until "
        "the new one is warm)")
    watch_interval_s: float = option(
        2.0, "--watch-interval-s", float,
        "how often --watch looks at the store",
        check=(lambda v: v > 0,
               lambda v: f"watch interval {v} s must be > 0"))
    otlp_endpoint: str | None = option(
        None, "--otlp-endpoint", str,
        "send each request's spans (admission, decode, queue, inference, postprocess) to this OTLP/HTTP collector, "
        "e.g. http://127.0.0.1:4318/v1/traces (unset: no export; W3C traceparent is still read and echoed, and logs "
        "carry the trace id)")
    trace_sample_ratio: float = option(
        1.0, "--trace-sample-ratio", float,
        "share of requests without a sampled parent whose spans are exported (0..1)",
        check=(lambda v: 0.0 <= v <= 1.0,
               lambda v: f"trace sample ratio {v} must lie in 0..1"))

    def __post_init__(self) -> None:
        for item in fields(self):
            check = item.metadata.get("check")
            value = getattr(self, item.name)
            if check is not None and not check[0](value):
                raise ValueError(check[1](value))
        object.__setattr__(self, "precision", requested_precision(self.precision))
        checks = [  # the rules that tie two or more fields
            (self.backend == "onnx" or self.precision in (AUTO, Precision.FP32),
             f"precision {self.precision} needs the onnx backend (variants are ONNX files)"),
            (0 <= self.grpc_port <= 65535 and self.grpc_port != self.port,
             f"gRPC port {self.grpc_port} must be 0 (off) or lie in 1..65535 and differ from --port {self.port}"),
            (not self.watch or self.http_workers == 1,
             "--watch reloads models in the process that serves them; it needs --http-workers 1"),
            (self.max_connections == 0 or self.max_connections > self.max_concurrent,
             f"max connections {self.max_connections} must be 0 (automatic) or more than --max-concurrent "
             f"{self.max_concurrent}, or probes would be refused before the request limit applies"),
            (self.max_inflight_bytes >= self.max_body_bytes,
             f"in-flight upload limit {self.max_inflight_bytes} bytes must be >= the upload limit "
             f"{self.max_body_bytes} (--max-body-bytes), or the largest upload could never be admitted"),
            (self.max_inflight_pixels >= self.max_pixels,
             f"in-flight pixel limit {self.max_inflight_pixels} must be >= the pixel limit {self.max_pixels} "
             "(--max-pixels), or the largest image could never be admitted"),
            (self.api_key is not None or self.allow_unauthenticated or is_loopback(self.host),
             f"binding {self.host} without an API key would serve anyone who can reach it; set --api-key (or "
             "SERVER_API_KEY), or --allow-unauthenticated true behind a gateway that authenticates"),
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


# flag -> (Settings field, type parser, help), from the fields' declarations. The env var is SERVER_<FIELD>.
OPTIONS: dict[str, tuple[str, Any, str]] = {
    item.metadata["flag"]: (item.name, item.metadata["parse"], item.metadata["help"]) for item in fields(Settings)}


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
