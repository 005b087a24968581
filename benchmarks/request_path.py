"""``python -m benchmarks request-path``: each step of a request's path inside the server, before and after (issue 15).

Three steps, each timed in one process with its two variants interleaved (A, B, A, B, ...) so that the noise of a
shared machine falls on both alike; each figure is the median over ``--repeats``, in microseconds:

1. decode: JPEG bytes -> normalised model input, real photos from scikit-image re-encoded at each upload size
   (quality 90), to each input size. Before: the server's ``prepare_image`` (Pillow decodes at the DCT scale 1/2,
   1/4 or 1/8 that ``Image.draft`` picks); after: the same with simplejpeg decoding the pixels (libjpeg-turbo, DCT
   scales in eighths, ``min_height``/``min_width`` = the input size) while Pillow still reads the header (format,
   pixel limit, EXIF), then the same bilinear resize and the same normaliser. The mean absolute difference of the
   two tensors is shown too. simplejpeg is not a server dependency (it measured no better); the test extra
   installs it for this step.
2. json: realistic /predict, /robustness and /v2 bodies made into a response. Before: Starlette's
   ``JSONResponse`` (``json.dumps``; /v2: ``json.dumps`` as ``server.kserve`` used it); after:
   ``server.responses`` (orjson). The two bodies must parse to the same data.
3. hops: the hand-off of the decode from the event loop to the decode pool and back, with ``--concurrency``
   requests in flight on one event loop: today's ``asyncio.wait_for(run_in_executor(...))``, the same hop with
   the deadline as a loop timer (as the batcher keeps it), and the work done inline on the event loop. Time per
   request, wall and CPU of the whole process, for an empty job (the hop alone) and for the decode of a small
   upload.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import io
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
from PIL import Image
from skimage import data as samples
from starlette.responses import JSONResponse as StarletteJSONResponse
from tqdm import tqdm

from common.compute import available_cores
from common.kinds import Activation, Task
from common.preprocess import InputNormaliser, resize_to_input
from common.scores import class_scores, score_table, top_labels
from robustness.masks import masks
from robustness.occlusion_report import occlusion_report
from server.images import EXIF_ORIENTATION, decode_image, open_untrusted, prepare_image
from server.responses import JSONResponse, dumps

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MAX_PIXELS = 50_000_000
PHOTOS = ("chelsea", "astronaut", "coffee")


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    width, _, height = text.partition("x")
    return int(width), int(height)


def jpeg(photo: str, size: tuple[int, int], quality: int = 90) -> bytes:
    """A scikit-image sample photo stretched to ``size`` (w, h) and encoded as a baseline JPEG."""
    out = io.BytesIO()
    Image.fromarray(getattr(samples, photo)()).convert("RGB").resize(size, Image.LANCZOS).save(
        out, format="JPEG", quality=quality)
    return out.getvalue()


def interleaved(cases: list[Callable[[], Any]], repeats: int, warmup: int = 3) -> list[float]:
    """Median microseconds of each case, the cases called in turn ``repeats`` times."""
    for case in cases:
        for _ in range(warmup):
            case()
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for case, spent in zip(cases, times, strict=True):
            start = time.perf_counter()
            case()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) * 1e6 for spent in times]


# ---------------------------------------------------------------- 1. decode


def simplejpeg_input(data: bytes, size: tuple[int, int], normaliser: InputNormaliser) -> tuple[np.ndarray, tuple]:
    """``prepare_image``'s tensor with simplejpeg decoding the pixels: Pillow reads the header and EXIF as in the
    server (the photos here carry no orientation), simplejpeg decodes at the smallest DCT scale (n/8) that still
    covers the input, then the same resize and normaliser. Also the decoded size (w, h)."""
    simplejpeg = importlib.import_module("simplejpeg")
    height, width = size
    image = open_untrusted(data, MAX_PIXELS, "image")
    image.draft("RGB", (width, height))  # the server reserves the pixels of Pillow's draft before decoding
    image.getexif().get(EXIF_ORIENTATION, 1)
    rgb = Image.fromarray(simplejpeg.decode_jpeg(data, "RGB", min_height=height, min_width=width), mode="RGB")
    return normaliser(resize_to_input(rgb, size)), rgb.size


def decode_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Pillow against simplejpeg, per photo, upload size and input size."""
    normaliser = InputNormaliser(IMAGENET_MEAN, IMAGENET_STD)
    jobs = [(photo, upload, side) for photo in args.photos for upload in args.uploads for side in args.sizes]
    rows = []
    payloads = {(photo, upload): jpeg(photo, upload) for photo in args.photos for upload in args.uploads}
    for photo, upload, side in tqdm(jobs, desc="decode", unit="case", file=sys.stderr):
        payload, size = payloads[photo, upload], (side, side)

        def pillow(payload: bytes = payload, size: tuple[int, int] = size) -> np.ndarray:
            return prepare_image(payload, size, normaliser, MAX_PIXELS).tensor

        def turbo(payload: bytes = payload, size: tuple[int, int] = size) -> np.ndarray:
            return simplejpeg_input(payload, size, normaliser)[0]

        before, after = interleaved([pillow, turbo], args.repeats)
        rows.append({"photo": photo, "upload": upload, "side": side, "before": before, "after": after,
                     "pillow_size": decode_image(payload, MAX_PIXELS, size).rgb.size,
                     "turbo_size": simplejpeg_input(payload, size, normaliser)[1],
                     "mad": float(np.abs(pillow() - turbo()).mean())})
    return rows


def decode_table(rows: list[dict[str, Any]]) -> str:
    """One Markdown row per case."""
    lines = ["| photo | upload | input | Pillow µs | simplejpeg µs | before / after | decoded at (Pillow / simplejpeg) "
             "| mean abs diff |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        (pw, ph), (tw, th) = r["pillow_size"], r["turbo_size"]
        lines.append(f"| {r['photo']} | {r['upload'][0]}x{r['upload'][1]} | {r['side']} | {r['before']:.0f} | "
                     f"{r['after']:.0f} | {r['before'] / r['after']:.2f} | {pw}x{ph} / {tw}x{th} | {r['mad']:.4f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- 2. json


def class_names(count: int) -> list[str]:
    """Names as long as ImageNet's (about 12 characters)."""
    return [f"class name {i:04d}" for i in range(count)]


def json_bodies(seed: int = 0) -> dict[str, Any]:
    """/predict and /robustness bodies as the routes build them, from random logits."""
    rng = np.random.default_rng(seed)
    timing = {"decode_ms": 0.61, "queue_ms": 4.87, "inference_ms": 9.12, "total_ms": 15.3, "batch_size": 8}
    bodies: dict[str, Any] = {}
    for label, count, activation, threshold in (("sigmoid, 20 classes", 20, Activation.SIGMOID, 0.5),
                                                ("softmax, 1000 classes", 1000, Activation.SOFTMAX, None)):
        names = class_names(count)
        scores = class_scores(rng.normal(size=count).astype(np.float32) * 3, activation)
        limit = 5 if activation == Activation.SOFTMAX else None
        labels = top_labels(scores, names, limit, threshold if activation == Activation.SIGMOID else None)
        bodies[f"/predict {label}"] = {"model": "bench", "labels": labels, "threshold": threshold,
                                       "activation": activation, "timing": timing}
        if count == 1000:
            bodies[f"/predict {label}, scores=true"] = {**bodies[f"/predict {label}"],
                                                        "scores": score_table(scores, names)}
        for n in (16, 64):
            holes = masks(n, 224, 224, "high", seed)
            outputs = rng.normal(size=(n + 1, count)).astype(np.float32) * 3
            report = occlusion_report(Task.CLASSIFICATION, activation, names, outputs, holes, None,
                                      threshold, None)
            bodies[f"/robustness {label}, n={n}"] = {
                "model": "bench", "task": Task.CLASSIFICATION, "activation": activation,
                "mask_ratio": {"spec": "high", "range": [0.5, 0.6]}, "corruption": None, "n": n, "seed": seed,
                "threshold": threshold, **report, "timing": timing}
    return bodies


def v2_document(outputs: np.ndarray) -> dict[str, Any]:
    """The document ``server.kserve.infer_response`` encodes for outputs sent as JSON."""
    return {"model_name": "bench", "model_version": "1",
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": list(outputs.shape),
                         "data": outputs.astype(np.float32, copy=False).ravel().tolist()}]}


def json_cases() -> dict[str, tuple[Callable[[], bytes], Callable[[], bytes]]]:
    """Per body: (before, after), each returning the encoded body."""
    cases: dict[str, tuple[Callable[[], bytes], Callable[[], bytes]]] = {
        name: (lambda body=body: StarletteJSONResponse(body).body, lambda body=body: JSONResponse(body).body)
        for name, body in json_bodies().items()}
    for count in (20, 1000):
        document = v2_document(np.random.default_rng(count).normal(size=(8, count)).astype(np.float32))
        cases[f"/v2 infer, 8 x {count} FP32 outputs"] = (
            lambda document=document: json.dumps(document, separators=(",", ":")).encode(),  # server.kserve before
            lambda document=document: dumps(document))
    return cases


def json_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The stdlib encoding against orjson's, per body; both must parse to the same data."""
    rows = []
    for name, (old, new) in tqdm(json_cases().items(), desc="json", unit="body", file=sys.stderr):
        if json.loads(old()) != orjson.loads(new()):
            raise AssertionError(f"{name}: the orjson body parses to other data")
        before, after = interleaved([old, new], args.repeats * 2)
        rows.append({"body": name, "bytes": len(old()), "before": before, "after": after})
    return rows


def json_table(rows: list[dict[str, Any]]) -> str:
    """One Markdown row per body."""
    lines = ["| body | bytes | json.dumps µs | orjson µs | before / after |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['body']} | {r['bytes']:,} | {r['before']:.1f} | {r['after']:.1f} | "
              f"{r['before'] / r['after']:.1f} |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- 3. hops


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def hop_wait_for(pool: Executor, job: Callable[[], Any], seconds: float) -> Any:
    """Today's ``RequestPipeline.off_loop``: the decode pool under ``asyncio.wait_for``."""
    return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, job), seconds)


async def hop_timer(pool: Executor, job: Callable[[], Any], seconds: float) -> Any:
    """The same hop, the deadline kept by one loop timer (as ``MicroBatcher.submit`` keeps its own)."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(pool, job)
    timer = loop.call_later(seconds, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


async def hop_inline(pool: Executor, job: Callable[[], Any], seconds: float) -> Any:
    """No hop: the job runs on the event loop."""
    return job()


HOPS = {"pool, wait_for (today)": hop_wait_for, "pool, loop timer": hop_timer, "inline on the loop": hop_inline}


async def _requests(hop: Callable, pool: Executor, job: Callable[[], Any], concurrency: int,
                    count: int) -> tuple[float, float]:
    """Wall and process CPU microseconds per request, ``count`` requests with ``concurrency`` in flight."""
    left = count

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await hop(pool, job, 30.0)
            await asyncio.sleep(0)  # the rest of a request: back to the loop once

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.perf_counter() - wall) / count * 1e6, (time.process_time() - cpu) / count * 1e6


def hop_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each hop with an empty job and with a small upload's decode, rounds interleaved; medians per request."""
    normaliser = InputNormaliser(IMAGENET_MEAN, IMAGENET_STD)
    payload = jpeg("chelsea", (224, 224))
    jobs = {"empty job": (lambda: None, args.hop_requests * 10),
            "decode 224x224 JPEG to 224": (lambda: prepare_image(payload, (224, 224), normaliser, MAX_PIXELS),
                                           args.hop_requests)}
    rows = []
    pool = ThreadPoolExecutor(available_cores(), thread_name_prefix="decode")  # the server's decode pool
    try:
        cases = [(job, concurrency) for job in jobs for concurrency in (1, args.concurrency)]
        for job, concurrency in tqdm(cases, desc="hops", unit="case", file=sys.stderr):
            work, count = jobs[job]
            spent: dict[str, list[tuple[float, float]]] = {name: [] for name in HOPS}
            for _ in range(args.hop_rounds):
                for name, hop in HOPS.items():
                    spent[name].append(asyncio.run(_requests(hop, pool, work, concurrency, count)))
            for name in HOPS:
                rows.append({"job": job, "concurrency": concurrency, "hop": name,
                             "wall": statistics.median(w for w, _ in spent[name]),
                             "cpu": statistics.median(c for _, c in spent[name])})
    finally:
        pool.shutdown()
    return rows


def hop_table(rows: list[dict[str, Any]]) -> str:
    """One Markdown row per job, concurrency and hop, with each figure against today's."""
    lines = ["| job | in flight | hand-off | wall µs / request | CPU µs / request | CPU, today / this |",
             "|---|---:|---|---:|---:|---:|"]
    today = {(r["job"], r["concurrency"]): r for r in rows if r["hop"] == next(iter(HOPS))}
    for r in rows:
        base = today[r["job"], r["concurrency"]]
        lines.append(f"| {r['job']} | {r['concurrency']} | {r['hop']} | {r['wall']:.1f} | {r['cpu']:.1f} | "
                     f"{base['cpu'] / r['cpu']:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def machine_line() -> str:
    """What ran the benchmark."""
    simplejpeg = importlib.import_module("simplejpeg") if importlib.util.find_spec("simplejpeg") else None
    return (f"Machine: {platform.machine()}, {available_cores()} cores available (shared with other jobs), Python "
            f"{platform.python_version()}, Pillow {Image.__version__}, "
            f"simplejpeg {simplejpeg.__version__ if simplejpeg else 'not installed'}, orjson {orjson.__version__}, "
            f"numpy {np.__version__}.")


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks request-path") -> int:
    """Print the three before/after tables."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", nargs="+", choices=["decode", "json", "hops"], default=["decode", "json", "hops"])
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per variant and case (json: twice)")
    parser.add_argument("--photos", nargs="+", choices=PHOTOS, default=list(PHOTOS))
    parser.add_argument("--uploads", type=parse_size, nargs="+", default=[(640, 480), (1920, 1080)],
                        help="upload sizes WxH the photos are re-encoded at")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224, 448], help="square model input sides")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight in the hop step")
    parser.add_argument("--hop-requests", type=int, default=400, help="requests per hop measurement (empty job: 10x)")
    parser.add_argument("--hop-rounds", type=int, default=3, help="interleaved rounds of the hop measurements")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.concurrency < 1 or args.hop_requests < 1 or args.hop_rounds < 1 \
            or any(side < 1 for side in args.sizes) or any(min(size) < 1 for size in args.uploads):
        print(f"{prog}: error: counts and sizes must be positive", file=sys.stderr)
        return 2
    if "decode" in args.steps and importlib.util.find_spec("simplejpeg") is None:
        print(f"{prog}: error: the decode step compares Pillow with simplejpeg, which is not a dependency (it measured "
              "no better); `pip install simplejpeg==1.9.0`, or leave the step out (--steps json hops)", file=sys.stderr)
        return 2
    sections = []
    if "decode" in args.steps:
        sections.append("decode + resize + normalise (prepare_image), median of "
                        f"{args.repeats}:\n{decode_table(decode_rows(args))}")
    if "json" in args.steps:
        sections.append(f"JSON response (body encoded), median of {args.repeats * 2}:\n{json_table(json_rows(args))}")
    if "hops" in args.steps:
        sections.append(f"decode pool hand-off, median of {args.hop_rounds} rounds of {args.hop_requests} requests "
                        f"(empty job: {args.hop_requests * 10}):\n{hop_table(hop_rows(args))}")
    print(machine_line())
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.request_path"))
