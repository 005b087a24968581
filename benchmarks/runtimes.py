"""``python -m benchmarks runtimes``: eager vs TorchScript vs ONNX Runtime on one model, in one run."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from export.formats import load_torchscript
from export.random_weights import export_random, random_model
from model_store.manifest import ONNX_FILE, TORCHSCRIPT_FILE

SEED = 0


def time_call(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks runtimes") -> int:
    """Export a random-weight preset, then time each runtime at batch 1 (latency) and batch N (throughput)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--preset", default="msl-c-voc", help="model preset (default msl-c-voc: ResNet-101 at 448)")
    parser.add_argument("--image-size", type=int, help="override the preset's input size")
    parser.add_argument("--batch", type=int, default=8, help="throughput batch size (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (default 5)")
    args = parser.parse_args(argv)
    try:
        model = random_model(args.preset, SEED, image_size=args.image_size).eval()
    except (KeyError, TypeError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    size = model.preset.image_size
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        # The same seeded weights as ``model``, exported (and parity-checked) like any store entry.
        manifest = export_random(args.preset, "bench", Path(tmp), formats=("onnx", "torchscript"), seed=SEED,
                                 image_size=args.image_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(manifest.artifact(ONNX_FILE)), options,
                                       providers=["CPUExecutionProvider"])
        scripted = load_torchscript(manifest.artifact(TORCHSCRIPT_FILE))
        input_name = manifest.input.name
        runtimes: dict[str, Callable[[np.ndarray], object]] = {
            "eager": lambda x: model(torch.from_numpy(x)),
            "torchscript": lambda x: scripted(torch.from_numpy(x)),
            "onnxruntime": lambda x: session.run(None, {input_name: x}),
        }
        rows = []
        with torch.inference_mode():
            for name, run in tqdm(runtimes.items(), desc="runtimes", unit="rt"):
                one = np.random.rand(1, 3, size, size).astype(np.float32)
                many = np.random.rand(args.batch, 3, size, size).astype(np.float32)
                latency = statistics.median(time_call(lambda run=run, one=one: run(one), args.repeats))
                batch_s = statistics.median(time_call(lambda run=run, many=many: run(many), max(2, args.repeats // 2)))
                rows.append((name, latency * 1000, args.batch / batch_s))
    eager_ips = rows[0][2]
    print(f"\n{args.preset} at {size}x{size}, {threads} threads, median of {args.repeats}")
    print(f"| runtime | batch 1 latency (ms) | images/s at batch {args.batch} | throughput vs eager |")
    print("|---|---:|---:|---:|")
    for name, ms, ips in rows:
        print(f"| {name} | {ms:.0f} | {ips:.2f} | {ips / eager_ips:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.runtimes"))
