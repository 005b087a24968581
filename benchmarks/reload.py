"""``python -m benchmarks reload``: latency and errors while a model is reloaded under load, against steady load,
same server, one run.

One ``python -m server`` subprocess serves the model; ``--concurrency`` clients keep v2 binary infer requests in
flight (hand-written keep-alive HTTP/1.1, a near-free client). Windows alternate: a steady one, then one in which
``POST /v2/repository/models/{model}/load`` runs every ``--reload-gap`` seconds (each builds and warms a new
runner while the old one answers, then switches). Every request's start and end are kept: the table shows p50 and
p99 of the steady windows, of the requests that overlapped a reload, and of those between reloads, and the errors
(any answer but 200, the reloads' own included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from benchmarks.grpc import http_body, http_client
from benchmarks.server import add_load_arguments, bench_entry, command_line, publish
from loadtests.processes import ServerProcess


@dataclass
class Window:
    """One timed window: each request's (start, end) and status, and the reloads' (start, end)."""

    requests: list[tuple[float, float, int]] = field(default_factory=list)
    reloads: list[tuple[float, float, int]] = field(default_factory=list)

    def latencies(self, during_reload: bool | None = None) -> list[float]:
        """Request latencies in seconds: all, or only those that overlapped a reload (True) or none (False)."""
        def overlaps(start: float, end: float) -> bool:
            return any(start < r_end and end > r_start for r_start, r_end, _ in self.reloads)
        return [end - start for start, end, _ in self.requests
                if during_reload is None or overlaps(start, end) == during_reload]

    @property
    def errors(self) -> int:
        """Answers other than 200, reloads included."""
        return sum(status != 200 for *_, status in (*self.requests, *self.reloads))


async def window(server: ServerProcess, model: str, body: bytes, header_length: int, concurrency: int,
                 seconds: float, reload_gap: float | None) -> Window:
    """One window at saturation; with ``reload_gap``, the model is reloaded over and over, that long apart."""
    pairs = [await http_client(server.url, model, body, header_length) for _ in range(concurrency)]
    out = Window()
    end = time.perf_counter() + seconds

    async def worker(call) -> None:
        while time.perf_counter() < end:
            start = time.perf_counter()
            status = await call()
            out.requests.append((start, time.perf_counter(), status))

    async def reloader() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            while time.perf_counter() + reload_gap < end:
                await asyncio.sleep(reload_gap)
                start = time.perf_counter()
                response = await client.post(f"/v2/repository/models/{model}/load")
                out.reloads.append((start, time.perf_counter(), response.status_code))

    await asyncio.gather(*(worker(call) for call, _ in pairs), *([reloader()] if reload_gap is not None else []))
    for _, close in pairs:
        await close()
    return out


def percentile_ms(values: list[float], q: float) -> float:
    """The q-th percentile of latencies, in ms."""
    return 1000 * float(np.percentile(values, q)) if values else float("nan")


def markdown(command: str, model: str, concurrency: int, gap: float, steady: list[Window],
             reloading: list[Window]) -> str:
    """The comparison as a Markdown section."""
    def row(name: str, windows: list[Window], during: bool | None) -> str:
        latencies = [v for w in windows for v in w.latencies(during)]
        reloads = [r for w in windows for r in w.reloads]
        seconds = [r_end - r_start for r_start, r_end, _ in reloads]
        return (f"| {name} | {len(latencies)} | {sum(w.errors for w in windows) if during is not False else ''} | "
                f"{len(reloads) if during else ''} | {f'{1000 * np.median(seconds):.0f}' if during else ''} | "
                f"{percentile_ms(latencies, 50):.1f} | {percentile_ms(latencies, 99):.1f} |")

    p99_steady = percentile_ms([v for w in steady for v in w.latencies()], 99)
    p99_during = percentile_ms([v for w in reloading for v in w.latencies(True)], 99)
    return "\n".join([
        f"Command: `{command}`", "",
        f"Model `{model}`, {concurrency} v2 binary requests in flight (saturation), a reload every {gap:g} s in the "
        f"reloading windows, load average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}.", "",
        "| requests | count | errors | reloads | reload ms (median) | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("steady windows", steady, None),
        row("reloading windows, overlapping a reload", reloading, True),
        row("reloading windows, between reloads", reloading, False), "",
        f"p99 of requests overlapping a reload / steady p99: **{p99_during / p99_steady:.2f}**.", ""])


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks reload") -> int:
    """Alternate steady and reloading windows on one server; print the comparison."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, rounds=3, rounds_help="steady/reloading window pairs")
    parser.add_argument("--reload-gap", type=float, default=1.0,
                        help="seconds between one reload's answer and the next reload (0: back to back)")
    parser.add_argument("--output", type=Path, help="write the Markdown section here")
    args = parser.parse_args(argv)
    concurrency = args.concurrency[0]
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        entry = bench_entry(args, Path(tmp))
        if entry is None:
            return 2
        store, manifest = entry
        images = np.random.default_rng(0).standard_normal((1, 3, *manifest.input.size)).astype(np.float32)
        body, header_length = http_body(manifest.input.name, images)
        server = ServerProcess(store, ["--models", args.model, "--max-batch", str(args.max_batch),
                                       "--max-delay-ms", str(args.max_delay_ms),
                                       "--queue-size", str(4 * concurrency)]).start()
        steady, reloading = [], []
        try:
            asyncio.run(window(server, args.model, body, header_length, concurrency, args.warmup, None))
            with tqdm(total=args.rounds, desc="steady/reloading pairs", unit="pair") as bar:
                for _ in range(args.rounds):
                    for gap, out in ((None, steady), (args.reload_gap, reloading)):
                        out.append(asyncio.run(window(server, args.model, body, header_length, concurrency,
                                                      args.seconds, gap)))
                    bar.update()
        finally:
            server.stop()
    publish(markdown(command_line(prog, argv).strip(), args.model, concurrency, args.reload_gap, steady, reloading),
            args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.reload"))
