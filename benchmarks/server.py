"""``python -m benchmarks server``: server requests/s against raw ONNX Runtime images/s, same model, one run.

1. Raw ONNX Runtime at saturation: in-process loops over batches of ``--max-batch`` images, with the
   same session options the server uses, in two layouts (one session on all cores, or one single-threaded
   session per core side by side). The faster layout of each round is the ceiling.
2. The server (`python -m server`, a subprocess on a free 127.0.0.1 port) at saturation: ``--concurrency``
   clients keep requests in flight, each POSTing a JPEG to /predict. Two load generators: ``socket`` (a
   hand-written keep-alive HTTP/1.1 client that costs almost no CPU) and ``httpx`` (httpx.AsyncClient).

The machine is shared, so the two are measured in alternating windows (``--rounds`` pairs) and each
ratio is taken within a pair; the table shows medians. CPU seconds per image are measured too: they do
not depend on what else the machine runs. The goal is a ratio of 0.9 or more. With ``--output`` the
figures are written to a Markdown file together with the command and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image
from tqdm import tqdm

from common.compute import available_cores
from export.random_weights import export_random
from loadtests.processes import ServerProcess
from loadtests.raw_ceiling import BoundSession, Throughput, best_raw, raw_layouts
from model_store.manifest import ONNX_FILE, Manifest, entry_dir, load_manifest


def build_store(preset: str, name: str, folder: Path) -> Path:
    """Export a randomly initialised preset into a fresh store (the benchmark needs speed, not accuracy)."""
    store = folder / "model_store"
    export_random(preset, name, store, seed=0, progress=True)
    return store


def descendants(pid: int) -> list[int]:
    """A process's children, grandchildren and so on (Linux /proc; the front end's children have sessions of
    their own, so its process group does not find them)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids = [int(child) for child in task.read_text().split()]
                found += kids
                todo += kids
    return found


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and every process below it (Linux /proc)."""
    total = 0.0
    for member in (pid, *descendants(pid)):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)  # not Inference-Header-Content-Length


async def _httpx_worker(url: str, payload: bytes, concurrency: int):
    """A request function backed by one shared httpx.AsyncClient (connection pool of ``concurrency``)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.AsyncClient(base_url=url, limits=limits, timeout=60)
    headers = {"Content-Type": "image/jpeg"}

    async def call() -> int:
        return (await client.post("/predict", content=payload, headers=headers)).status_code

    return call, client.aclose


async def socket_client(url: str, path: str, payload: bytes, headers: str = "Content-Type: image/jpeg") -> tuple:
    """A request function POSTing ``payload`` to ``path`` over one keep-alive HTTP/1.1 connection written by hand
    (a near-free client), and its closer; ``headers`` are extra header lines joined by CRLF."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n"  # the server checks Host
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload

    async def call() -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(CONTENT_LENGTH.search(head).group(1)))
        return int(head[9:12])

    async def close() -> None:
        writer.close()

    return call, close


def bench_entry(args: argparse.Namespace, folder: Path) -> tuple[Path, Manifest] | None:
    """The store (``--store``, else a fresh export of ``--preset``) and the manifest of ``--model`` in it; None
    after a one-line error when the store has no such entry."""
    store = args.store or build_store(args.preset, args.model, folder)
    try:
        return store, load_manifest(entry_dir(store, args.model))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


async def saturate(url: str, payload: bytes, concurrency: int, warmup: float, seconds: float,
                   client: str, server_pid: int) -> Throughput:
    """Keep ``concurrency`` /predict requests in flight; count answers completed inside the timed window."""
    if client == "httpx":
        call, close = await _httpx_worker(url, payload, concurrency)
        calls, closers = [call] * concurrency, [close]
    else:
        pairs = [await socket_client(url, "/predict", payload) for _ in range(concurrency)]
        calls, closers = [c for c, _ in pairs], [c for _, c in pairs]
    return await closed_loop(calls, closers, warmup, seconds, server_pid)


async def closed_loop(calls: list[Callable[[], Awaitable[int]]], closers: list[Callable[[], Awaitable[None]]],
                      warmup: float, seconds: float, server_pid: int) -> Throughput:
    """Run each call again as soon as it answers (one per client in flight); count the 200s and the others that
    finish inside the timed window, and the CPU both sides spent in it; then close the clients."""
    counts = {"ok": 0, "errors": 0}
    start = time.perf_counter()
    window_start, window_end = start + warmup, start + warmup + seconds
    cpu = {"client": 0.0, "server": 0.0}

    async def worker(call) -> None:
        while time.perf_counter() < window_end:
            status = await call()
            now = time.perf_counter()
            if window_start <= now < window_end:
                counts["ok" if status == 200 else "errors"] += 1

    async def clock() -> None:
        await asyncio.sleep(warmup)
        client_start, server_start = time.process_time(), process_cpu_seconds(server_pid)
        await asyncio.sleep(seconds)
        cpu["client"] = time.process_time() - client_start
        cpu["server"] = process_cpu_seconds(server_pid) - server_start

    await asyncio.gather(clock(), *(worker(call) for call in calls))
    for close in closers:
        await close()
    return Throughput(counts["ok"], seconds, counts["errors"], client_cpu=cpu["client"], server_cpu=cpu["server"])


def jpeg_payload(width: int, height: int) -> bytes:
    """A deterministic JPEG of the given size."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(out, format="JPEG", quality=90)
    return out.getvalue()


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r} must look like 224x224") from None
    return width, height


@dataclass(frozen=True)
class Round:
    """One raw window per layout followed by one server window."""

    raw_layout: str  # the faster raw layout of this round, e.g. "2x1"
    raw: Throughput
    served: Throughput

    @property
    def ratio(self) -> float:
        """Server requests/s over raw images/s."""
        return self.served.rate / self.raw.rate

    @property
    def raw_cpu_ms(self) -> float:
        """CPU milliseconds per image, raw loop."""
        return 1000 * self.raw.server_cpu / self.raw.count

    @property
    def served_cpu_ms(self) -> tuple[float, float]:
        """CPU milliseconds per request: (server, load generator)."""
        count = max(self.served.count, 1)
        return 1000 * self.served.server_cpu / count, 1000 * self.served.client_cpu / count


@dataclass(frozen=True)
class Configuration:
    """A payload, a load generator and a number of requests in flight, with its rounds."""

    payload: tuple[int, int]
    client: str
    concurrency: int
    rounds: list[Round]

    def median(self, values) -> float:
        """Median of a list of numbers."""
        return float(np.median(list(values)))


def markdown(args: argparse.Namespace, size: tuple[int, int], configurations: list[Configuration],
             command: str, provider: str = "CPUExecutionProvider") -> str:
    """The benchmark section for docs."""
    lines = [
        "## Server against raw ONNX Runtime (`benchmarks/server.py`)",
        "",
        "Goal (issue 6): server requests/s at saturation >= 0.9 x raw ONNX Runtime images/s on the same model.",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {platform.machine()}, {available_cores()} cores available (shared with other jobs), Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}. Model `{args.preset}` (random weights) at "
        f"{size[0]}x{size[1]}, {provider}. Raw: in-process loops over batches of {args.max_batch}, "
        + (f"run as one session with {available_cores()} intra-op threads and as {available_cores()} one-thread "
           "sessions side by side; each round keeps the faster layout (named in the table). "
           if provider == "CPUExecutionProvider" else
           "through the server's own backend (input copied to the device, IOBinding, output copied back). ")
        +
        f"Server: `--max-batch {args.max_batch} --max-delay-ms "
        f"{args.max_delay_ms:g} --workers {args.workers} --http-workers {args.http_workers}`, default logging "
        "(one JSON line per request). "
        f"{args.rounds} rounds per row, each a {args.seconds:g} s raw window per layout then a "
        f"{args.seconds:g} s server window (after {args.warmup:g} s of untimed load); the throughput ratio is "
        "taken within each round "
        "and the table shows medians. The load generator shares the two cores with the server: `socket` is "
        "a hand-written keep-alive HTTP/1.1 client (about 0.1 ms of CPU per request), `httpx` is "
        "httpx.AsyncClient (about 1.5 ms per request, taken from the server's CPU). The last column compares "
        "CPU time: raw CPU ms per image over server + client CPU ms per request, which does not depend on "
        "what else runs on the machine.",
        "",
        "| payload | client | in flight | raw images/s (layout) | server requests/s | ratio "
        "| CPU ms raw / server + client | CPU ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configurations:
        width, height = c.payload
        raw_cpu = c.median(r.raw_cpu_ms for r in c.rounds)
        server_cpu = c.median(r.served_cpu_ms[0] for r in c.rounds)
        client_cpu = c.median(r.served_cpu_ms[1] for r in c.rounds)
        errors = sum(r.served.errors for r in c.rounds)
        lines.append(
            f"| {width}x{height} JPEG | {c.client} | {c.concurrency} | {c.median(r.raw.rate for r in c.rounds):.1f} "
            f"({'/'.join(sorted({r.raw_layout for r in c.rounds}))}) "
            f"| {c.median(r.served.rate for r in c.rounds):.1f}{f' ({errors} errors)' if errors else ''} "
            f"| {c.median(r.ratio for r in c.rounds):.2f} | {raw_cpu:.1f} / {server_cpu:.1f} + {client_cpu:.1f} "
            f"| {raw_cpu / (server_cpu + client_cpu):.2f} |")
    return "\n".join(lines) + "\n"


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command that ran, as the Markdown sections quote it."""
    return f"{prog} " + " ".join(sys.argv[1:] if argv is None else argv)


def publish(text: str, output: Path | None) -> None:
    """Print a benchmark's Markdown and, with ``--output``, write it to that file."""
    print(text)
    if output:
        output.write_text(text.rstrip("\n") + "\n")


def add_load_arguments(parser: argparse.ArgumentParser, rounds: int, seconds_help: str = "timed window",
                       rounds_help: str = "windows per row") -> None:
    """The flags every saturation benchmark shares: what to serve, how long to measure, how much to keep in flight."""
    parser.add_argument("--preset", default="resnet18-csra", help="model preset to export with random weights")
    parser.add_argument("--store", type=Path, help="use this store instead of exporting (with --model)")
    parser.add_argument("--model", default="bench", help="model name in the store")
    parser.add_argument("--seconds", type=float, default=8.0, help=seconds_help)
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed load before each server window")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16], help="requests in flight")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=0.0, help="server --max-delay-ms")


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks server") -> int:
    """Run both measurements and print (optionally write) the comparison."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, rounds=3, seconds_help="timed window (raw and server, per round)",
                       rounds_help="raw/server window pairs per row")
    parser.add_argument("--clients", nargs="+", choices=["socket", "httpx"], default=["socket", "httpx"],
                        help="load generators to use")
    parser.add_argument("--payload", type=parse_size, nargs="+", default=[(224, 224), (640, 480)],
                        help="JPEG sizes to POST, e.g. 224x224 640x480")
    parser.add_argument("--workers", type=int, default=1, help="server --workers (concurrent batches)")
    parser.add_argument("--http-workers", type=int, default=1, help="server --http-workers (HTTP processes)")
    parser.add_argument("--providers", default="", help="ONNX Runtime providers for both the raw loop and the server, "
                                                        "e.g. cuda,cpu (default: what the server would choose)")
    parser.add_argument("--output", type=Path, help="write the Markdown section here")
    args = parser.parse_args(argv)
    providers = tuple(p for p in args.providers.split(",") if p)

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        entry = bench_entry(args, Path(tmp))
        if entry is None:
            return 2
        store, manifest = entry
        size = manifest.input.size
        feed = {manifest.input.name: np.random.default_rng(0).random((args.max_batch, 3, *size), dtype=np.float32)}
        layouts = raw_layouts(manifest.artifact(ONNX_FILE), feed, available_cores(), providers)
        flags = ["--models", args.model, "--precision", "fp32",  # the file the raw loop runs
                 *(["--providers", args.providers] if providers else []),
                 "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
                 "--workers", str(args.workers), "--http-workers", str(args.http_workers),
                 "--queue-size", str(4 * max(args.concurrency))]
        server = ServerProcess(store, flags).start()
        plan = [(p, c, n) for p in args.payload for c in args.clients for n in args.concurrency]
        configurations = []
        try:
            with tqdm(total=len(plan) * args.rounds, desc="bench rounds", unit="round") as bar:
                for payload_size, client, concurrency in plan:
                    payload = jpeg_payload(*payload_size)
                    rounds = []
                    for _ in range(args.rounds):
                        layout, raw = best_raw(layouts, feed, args.seconds)
                        served = asyncio.run(saturate(server.url, payload, concurrency,
                                                      args.warmup, args.seconds, client, server.process.pid))
                        rounds.append(Round(layout, raw, served))
                        bar.update()
                        bar.write(f"{payload_size[0]}x{payload_size[1]} {client} x{concurrency}: raw "
                                  f"{raw.rate:.1f} images/s ({layout}), server {served.rate:.1f} requests/s, "
                                  f"ratio {rounds[-1].ratio:.2f}")
                    configurations.append(Configuration(payload_size, client, concurrency, rounds))
        finally:
            server.stop()
    first = next(iter(layouts.values()))[0]
    provider = first.provider if isinstance(first, BoundSession) else "CPUExecutionProvider"
    publish(markdown(args, (size[1], size[0]), configurations, command_line(prog, argv).strip(), provider),
            args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.server"))
