"""``python -m benchmarks gpu``: issue 21's GPU table in one run, written to ``docs/benchmarks-gpu.md``.

For each model (random weights, exported here): raw ONNX Runtime on the provider the server uses (the server's
own backend in a loop over batches of ``--batch``: input copied to the device, IOBinding, output copied back),
against ``/predict`` at saturation (``--concurrency`` keep-alive clients POSTing a 640x480 JPEG to the server
with ``--max-batch`` = ``--batch``); the latency of the first batch of every size after the model is warm
against its steady latency (the model's runner, as the server builds it before ``/ready``); and ``/robustness``
(n masks) against one raw batch of n+1. Sized to finish in about 5 minutes on one GPU machine.

Without a GPU the command refuses, unless ``--providers cpu`` asks for a smoke run on the CPU (the tests use
it); such a run names no GPU and is not a GPU figure.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from benchmarks.server import command_line, jpeg_payload, publish, saturate
from export.random_weights import export_random
from loadtests.processes import ServerProcess
from loadtests.raw_ceiling import BoundSession, Throughput
from model_store.manifest import ONNX_FILE, Manifest, entry_dir, load_manifest
from server.runner import ModelRunner
from server.runtimes import GPU_PROVIDERS, choose_providers
from server.settings import Settings, available_cores

DEFAULT_MODELS = ("resnet18-csra", "mobilenetv2-csra", "msl-c-voc")
GOALS = {"resnet18-csra": 0.60, "msl-c-voc": 0.85}  # served / raw (issue 21)
FIRST_GOAL = 2.0  # first batch of a size within 2x of its steady latency
ROBUSTNESS_GOAL = 2.0  # /robustness n within 2x of one batch of n+1


def gpu_name() -> str | None:
    """The CUDA device torch sees, or None."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


@dataclass
class ModelFigures:
    """One model's row of every table."""

    preset: str
    size: tuple[int, int]
    raw: Throughput | None = None
    served: Throughput | None = None
    first_ms: dict[int, float] = field(default_factory=dict)  # batch size -> first run after warm-up
    steady_ms: dict[int, float] = field(default_factory=dict)  # batch size -> median of later runs
    robustness_ms: float = 0.0
    robustness_fresh_ms: float = 0.0
    batch_ms: float = 0.0  # one raw batch of n+1

    @property
    def ratio(self) -> float:
        """Served requests/s over raw images/s."""
        return self.served.rate / self.raw.rate if self.raw and self.served else float("nan")

    def worst_first(self) -> tuple[int, float]:
        """The batch size whose first run is slowest against its steady run, and that ratio."""
        size = max(self.first_ms, key=lambda n: self.first_ms[n] / self.steady_ms[n])
        return size, self.first_ms[size] / self.steady_ms[size]


def raw_rate(manifest: Manifest, providers: tuple[str, ...], batch: int, seconds: float) -> Throughput:
    """Images/s of the server's backend looping over batches of ``batch``."""
    bound = BoundSession(manifest.artifact(ONNX_FILE), manifest.input.name, providers, threads=available_cores())
    feed = {manifest.input.name: np.random.default_rng(0).random((batch, 3, *manifest.input.size), dtype=np.float32)}
    for _ in range(3):
        bound.run(None, feed)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        bound.run(None, feed)
        done += batch
    return Throughput(done, time.perf_counter() - start)


def one_batch_ms(manifest: Manifest, providers: tuple[str, ...], n: int, repeats: int = 10) -> float:
    """Median milliseconds of one raw batch of ``n`` (after warm-up)."""
    bound = BoundSession(manifest.artifact(ONNX_FILE), manifest.input.name, providers, threads=available_cores())
    feed = {manifest.input.name: np.random.default_rng(1).random((n, 3, *manifest.input.size), dtype=np.float32)}
    for _ in range(3):
        bound.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bound.run(None, feed)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


async def first_and_steady(runner: ModelRunner, sizes: list[int], repeats: int) -> tuple[dict, dict]:
    """Per batch size: the first exclusive batch after warm-up, and the median of ``repeats`` more (ms)."""
    runner.start()
    first, steady = {}, {}
    height, width = runner.input_size
    try:
        for n in sizes:
            images = np.random.default_rng(n).random((n, 3, height, width), dtype=np.float32)
            times = []
            for _ in range(repeats + 1):
                start = time.perf_counter()
                await runner(images, exclusive=True)
                times.append(1000 * (time.perf_counter() - start))
            first[n], steady[n] = times[0], statistics.median(times[1:])
    finally:
        await runner.stop()
    return first, steady


def robustness_latency(url: str, payload: bytes, n: int, repeats: int) -> tuple[float, float]:
    """Median ms of ``/robustness?n=`` with a repeated seed (cached masks) and with fresh seeds."""
    params = {"n": n, "mask_ratio": "high"}
    with httpx.Client(base_url=url, timeout=120, headers={"Content-Type": "image/jpeg"}) as client:
        client.post("/robustness", params={**params, "seed": 0}, content=payload).raise_for_status()
        results = {}
        for kind in ("repeat", "fresh"):
            times = []
            for index in range(repeats):
                seed = 0 if kind == "repeat" else 1000 + index
                start = time.perf_counter()
                client.post("/robustness", params={**params, "seed": seed}, content=payload).raise_for_status()
                times.append(1000 * (time.perf_counter() - start))
            results[kind] = statistics.median(times)
    return results["repeat"], results["fresh"]


def measure(preset: str, args: argparse.Namespace, folder: Path, bar: tqdm) -> ModelFigures:
    """Every figure of one model."""
    providers = tuple(args.providers.split(","))
    store = folder / preset
    export_random(preset, "bench", store, seed=0)
    manifest = load_manifest(entry_dir(store, "bench"))
    figures = ModelFigures(preset, manifest.input.size)
    bar.set_postfix_str(f"{preset}: raw")
    figures.raw = raw_rate(manifest, providers, args.batch, args.seconds)
    bar.set_postfix_str(f"{preset}: first batches")
    settings = Settings(store=store, providers=providers, max_batch=args.batch, precision="fp32")
    runner = ModelRunner(manifest, settings)
    runner.warmup()  # what the registry does before /ready
    sizes = sorted({*range(1, min(args.batch, 8) + 1), *runner.buckets, args.batch // 2 + 1, args.batch - 1} - {0})
    figures.first_ms, figures.steady_ms = asyncio.run(first_and_steady(runner, sizes, args.repeats))
    figures.batch_ms = one_batch_ms(manifest, providers, args.robustness_n + 1)
    bar.set_postfix_str(f"{preset}: served")
    flags = ["--models", "bench", "--precision", "fp32", "--providers", args.providers, "--max-batch", str(args.batch),
             "--queue-size", str(4 * args.concurrency), "--http-workers", str(args.http_workers)]
    server = ServerProcess(store, flags, log_path=folder / f"{preset}.log").start(timeout=600)
    try:
        payload = jpeg_payload(640, 480)
        figures.served = asyncio.run(saturate(server.url, payload, args.concurrency, args.warmup, args.seconds,
                                              "socket", server.process.pid))
        figures.robustness_ms, figures.robustness_fresh_ms = robustness_latency(server.url, payload,
                                                                                args.robustness_n, args.repeats)
    finally:
        server.stop()
    return figures


def verdict(value: float, goal: float, higher_is_better: bool) -> str:
    """'met' or 'missed' against a goal."""
    return "met" if (value >= goal if higher_is_better else value <= goal) else "missed"


def markdown(figures: list[ModelFigures], args: argparse.Namespace, device: str, command: str) -> str:
    """The GPU benchmark page."""
    lines = [
        "# GPU benchmarks (`python -m benchmarks gpu`)",
        "",
        f"Device: **{device}**; {available_cores()} CPU cores; Python {platform.python_version()}, onnxruntime "
        f"{ort.__version__}, providers `{args.providers}`. Random weights; one run; figures from one machine at one "
        "time, not timed tests.",
        "",
        "```",
        command,
        "```",
        "",
        f"## Served against raw (batch {args.batch}, 640x480 JPEG uploads, {args.concurrency} keep-alive clients, "
        f"`--http-workers {args.http_workers}`)",
        "",
        "| model | input | raw images/s | served requests/s | served / raw | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    for f in figures:
        goal = GOALS.get(f.preset)
        target = f"≥ {goal:.2f}: {verdict(f.ratio, goal, True)}" if goal else "-"
        errors = f" ({f.served.errors} errors)" if f.served and f.served.errors else ""
        lines.append(f"| {f.preset} | {f.size[0]}x{f.size[1]} | {f.raw.rate:,.0f} | {f.served.rate:,.1f}{errors} "
                     f"| {f.ratio:.3f} | {target} |")
    lines += ["", "## First batch of each size after `/ready`, against its steady latency (ms)", "",
              "| model | sizes | worst size | first ms | steady ms | first / steady | goal ≤ 2 |",
              "|---|---|---:|---:|---:|---:|---|"]
    for f in figures:
        size, ratio = f.worst_first()
        lines.append(f"| {f.preset} | {', '.join(map(str, f.first_ms))} | {size} | {f.first_ms[size]:.1f} "
                     f"| {f.steady_ms[size]:.1f} | {ratio:.2f} | {verdict(ratio, FIRST_GOAL, False)} |")
    n = args.robustness_n
    lines += ["", f"## `/robustness?n={n}` against one raw batch of {n + 1} (ms)", "",
              f"| model | batch of {n + 1} | repeated seed | ratio | fresh seed | ratio | goal ≤ 2 (repeated) |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for f in figures:
        ratio, fresh = f.robustness_ms / f.batch_ms, f.robustness_fresh_ms / f.batch_ms
        lines.append(f"| {f.preset} | {f.batch_ms:.1f} | {f.robustness_ms:.1f} | {ratio:.2f} "
                     f"| {f.robustness_fresh_ms:.1f} | {fresh:.2f} | {verdict(ratio, ROBUSTNESS_GOAL, False)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks gpu") -> int:
    """Measure every model and write the page."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="presets to export and measure")
    parser.add_argument("--providers", default="cuda", help="ONNX Runtime providers (cpu: a smoke run, no GPU)")
    parser.add_argument("--batch", type=int, default=32, help="raw batch size and server --max-batch")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight against the server")
    parser.add_argument("--http-workers", type=int, default=max(1, min(8, available_cores() // 2)),
                        help="server --http-workers (default: half the cores, at most 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed window, raw and served")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed load before the served window")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size and per /robustness kind")
    parser.add_argument("--robustness-n", type=int, default=32, help="masks per /robustness request")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks-gpu.md"), help="the page to write")
    args = parser.parse_args(argv)
    try:
        chosen = choose_providers(ort.get_available_providers(), tuple(args.providers.split(",")))
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    device = gpu_name() if chosen[0] in GPU_PROVIDERS else None
    if device is None and chosen[0] in GPU_PROVIDERS:
        print(f"{prog}: {chosen[0]} is available but torch sees no CUDA device", file=sys.stderr)
        return 2
    device = device or "no GPU: a CPU smoke run, not a GPU figure"
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp, tqdm(args.models, desc="gpu models") as bar:
        for preset in bar:
            figures.append(measure(preset, args, Path(tmp), bar))
    publish(markdown(figures, args, device, command_line(prog, argv).strip()), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.gpu"))
