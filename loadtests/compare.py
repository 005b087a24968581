"""``python -m loadtests compare``: one model, one Locust profile, three ways of serving it.

(a) a raw ONNX Runtime loop in this process (the ceiling), (b) this server, (c) TorchServe 0.12 serving
the same ONNX file through the exported .mar, with batching configured like ours.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import platform
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from common.compute import available_cores
from common.kinds import Task
from common.preprocess import InputNormaliser, resize_to_input
from export.torchserve import write_mar
from loadtests.locust_run import parse_seconds, read_stats, run_locust, shown
from loadtests.payloads import build_payloads
from loadtests.processes import ServerProcess, TorchServeProcess
from loadtests.raw_ceiling import best_raw, raw_layouts
from model_store.manifest import ONNX_FILE, ManifestError, entry_dir, load_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``compare``."""
    parser.add_argument("--model", required=True, help="model name in the store")
    parser.add_argument("--preset", help="export random weights of this preset first if the model is missing")
    parser.add_argument("--image-size", type=int, help="input size for --preset")
    parser.add_argument("--store", default="model_store")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--payload", default="scene-vga", help="payload name (see loadtests/payloads.py)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1,
                        help="batches run at once, for (b) and (c) alike (each with cores / workers threads)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--docs", type=Path, help="update this Markdown file (e.g. docs/benchmarks.md)")


def ensure_model(args: argparse.Namespace) -> Path:
    """The store entry for --model, exported from random --preset weights if absent."""
    try:
        return entry_dir(args.store, args.model)
    except ManifestError:
        if not args.preset:
            raise ValueError(f"model {args.model!r} is not in {args.store}; pass --preset to export one") from None
    from export.random_weights import export_random  # loads torch: only when a model must be exported

    return export_random(args.preset, args.model, args.store, formats=("onnx", "mar"), progress=True,
                         image_size=args.image_size).path


def raw_onnx_images_per_second(entry: Path, payload: bytes, batch: int, seconds: float) -> tuple[str, float]:
    """(a) The ceiling: decode once, then run full batches back to back; the faster thread layout and its rate."""
    manifest = load_manifest(entry)
    image = resize_to_input(Image.open(io.BytesIO(payload)).convert("RGB"), manifest.input.size)
    x = InputNormaliser(manifest.input.mean, manifest.input.std)(image)  # the server's own preprocessing
    feed = {manifest.input.name: np.ascontiguousarray(np.repeat(x[None], batch, axis=0))}
    layout, throughput = best_raw(raw_layouts(manifest.artifact(ONNX_FILE), feed, available_cores()), feed, seconds)
    return layout, throughput.rate


def machine_facts() -> str:
    """CPU model, cores and the key library versions."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return (f"{cpu}, {available_cores()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, "
            f"Python {platform.python_version()}, onnxruntime {ort.__version__}, "
            f"torch {importlib.metadata.version('torch')}")


def main(args: argparse.Namespace) -> int:
    """Run (a), (b), (c) in one go and print (and optionally record) the table and ratios."""
    entry = ensure_model(args)
    manifest = load_manifest(entry)
    if manifest.task != Task.CLASSIFICATION:
        raise ValueError(f"compare uses /predict; {args.model} is a {manifest.task} model")
    if not (Path(args.store) / f"{args.model}.mar").exists():
        write_mar(manifest, args.store)
    payload_dir = args.out / "payloads"
    payloads = build_payloads(payload_dir)
    if args.payload not in payloads:
        raise ValueError(f"--payload {args.payload!r}: choose from {', '.join(sorted(payloads))}")
    env = {"LOADTEST_PAYLOADS": str(payload_dir), "LOADTEST_PAYLOAD": args.payload}
    seconds = parse_seconds(args.duration)
    print("(a) raw ONNX Runtime loop ...", file=sys.stderr)
    layout, raw = raw_onnx_images_per_second(entry, payloads[args.payload].read_bytes(), args.max_batch,
                                             min(seconds, 20))
    print("(b) this server under Locust ...", file=sys.stderr)
    ours_args = ["--models", args.model, "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
                 "--queue-size", str(max(64, 4 * args.users)), "--workers", str(args.workers),
                 "--precision", "fp32"]  # the same ONNX file as (a) and (c)
    with ServerProcess(args.store, ours_args, args.out / "server.log") as server:
        ours = read_stats(run_locust(server.url, args.users, args.users, args.duration, args.out / "ours",
                                     {**env, "LOADTEST_WEIGHTS": "predict=1,segment=0,robustness=0"}))[-1]
    print("(c) TorchServe under Locust ...", file=sys.stderr)
    with TorchServeProcess(args.store, args.model, workers=args.workers, batch_size=args.max_batch,
                           max_batch_delay_ms=int(args.max_delay_ms), workdir=args.out / "torchserve") as ts:
        theirs = read_stats(run_locust(ts.url, args.users, args.users, args.duration, args.out / "torchserve",
                                       {**env, "LOADTEST_WEIGHTS": "predict=0,segment=0,robustness=0,torchserve=1",
                                        "LOADTEST_TORCHSERVE_MODEL": args.model}))[-1]
    size = manifest.input.size[0]
    title = f"{args.model} ({manifest.preset.arch}, {size}x{size})"
    lines = [
        f"### Head to head: {title}",
        "",
        f"Command: `python -m loadtests compare --model {args.model}"
        + (f" --preset {args.preset}" if args.preset else "") + (f" --image-size {args.image_size}" if args.image_size
                                                                 else "")
        + f" --users {args.users} --duration {args.duration} --payload {args.payload} --workers {args.workers}`",
        f"Machine: {machine_facts()}. Batching for (b) and (c): max batch {args.max_batch}, "
        f"max delay {args.max_delay_ms:g} ms; {args.workers} worker(s) each, sharing the cores "
        f"({max(1, available_cores() // args.workers)} ONNX Runtime threads per worker). (a) is the faster of "
        f"one {available_cores()}-thread session and {available_cores()} one-thread sessions side by side: {layout}.",
        "",
        "| serving | req/s (img/s) | p50 ms | p95 ms | p99 ms | failures |",
        "|---|---:|---:|---:|---:|---:|",
        f"| (a) raw ONNX Runtime loop, batch {args.max_batch} ({layout}) | {raw:.1f} | - | - | - | - |",
        f"| (b) this server | {ours.figure_cells()} | {ours.failures} |",
        f"| (c) TorchServe 0.12, same ONNX | {theirs.figure_cells()} | {theirs.failures} |",
        "",
        f"Ratios: (b)/(a) = {ours.rps / raw:.2f}, (b)/(c) = {ours.rps / max(theirs.rps, 1e-9):.2f}x, "
        f"p95 (b) {shown(ours.p95, '.0f')} ms vs (c) {shown(theirs.p95, '.0f')} ms.",
        "",
    ]
    publish("\n".join(lines), args.docs, f"compare:{args.model}")
    return 0


def publish(report: str, docs: Path | None, key: str) -> None:
    """Print a Markdown report and, if asked, record it in ``docs`` under ``key``."""
    print(report)
    if docs:
        update_section(docs, key, report)


def update_section(path: Path, key: str, text: str) -> None:
    """Replace (or append) the block between ``<!-- key -->`` markers in a Markdown file."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{text}\n{end}"
    current = path.read_text() if path.exists() else ""
    if start in current and end in current:
        before, rest = current.split(start, 1)
        current = before + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)
