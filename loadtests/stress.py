"""``python -m loadtests overload|soak``: documented runs (not in CI) of shedding and of steady load.

overload: open-loop /predict at 3x a given capacity; the server should shed with immediate 503s, keep
          the p99 of accepted requests bounded, and answer normally again within 5 s after the load.
soak:     /predict at 70% of capacity for 10 minutes; no failures and RSS growth under 5%.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil

from loadtests.compare import machine_facts, publish
from loadtests.locust_run import parse_seconds, read_stats, run_locust
from loadtests.payloads import build_payloads
from loadtests.processes import ServerProcess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by overload and soak."""
    parser.add_argument("--model", required=True, help="classification model in the store")
    parser.add_argument("--store", default="model_store")
    parser.add_argument("--capacity", type=float, required=True, help="requests/s the server sustains (compare)")
    parser.add_argument("--factor", type=float, help="offered load / capacity (overload 3.0, soak 0.7)")
    parser.add_argument("--duration", help="run time (overload 30s, soak 10m)")
    parser.add_argument("--users", type=int, default=16, help="Locust users sharing the offered rate")
    parser.add_argument("--queue-size", type=int, default=32, help="server queue per model")
    parser.add_argument("--payload", default="scene-vga")
    parser.add_argument("--out", type=Path, default=Path("runs/stress"))
    parser.add_argument("--docs", type=Path, help="record the figures in this Markdown file")


def probe_latency(url: str, payload: bytes, model: str) -> tuple[int, float]:
    """One /predict request: (status, milliseconds)."""
    start = time.perf_counter()
    status = httpx.post(f"{url}/predict?model={model}", content=payload,
                        headers={"Content-Type": "image/jpeg"}, timeout=30).status_code
    return status, (time.perf_counter() - start) * 1000


class RssSampler(threading.Thread):
    """Samples a process's resident memory every ``period`` seconds."""

    def __init__(self, pid: int, period: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.process, self.period, self.samples = psutil.Process(pid), period, []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append(self.process.memory_info().rss)
            self.stop_event.wait(self.period)


def main(args: argparse.Namespace) -> int:
    """Run an overload or a soak and print (optionally record) its figures."""
    mode = args.command
    factor = args.factor or (3.0 if mode == "overload" else 0.7)
    duration = args.duration or ("30s" if mode == "overload" else "10m")
    seconds = parse_seconds(duration)
    payloads = build_payloads(args.out / "payloads")
    payload = payloads[args.payload].read_bytes()
    rate_per_user = factor * args.capacity / args.users
    env = {"LOADTEST_PAYLOADS": str(args.out / "payloads"), "LOADTEST_PAYLOAD": args.payload,
           "LOADTEST_WEIGHTS": "predict=0,segment=0,robustness=0,paced=1", "LOADTEST_RATE": f"{rate_per_user:.4f}"}
    server_args = ["--models", args.model, "--queue-size", str(args.queue_size)]
    with ServerProcess(args.store, server_args, args.out / f"{mode}-server.log") as server:
        baseline = statistics.median(probe_latency(server.url, payload, args.model)[1] for _ in range(10))
        sampler = RssSampler(server.process.pid)
        sampler.start()
        stats = read_stats(run_locust(server.url, args.users, args.users, duration, args.out / mode, env,
                                      timeout_s=seconds + 180))
        sampler.stop_event.set()
        ended = time.perf_counter()
        recovered = None
        while time.perf_counter() - ended < 30:
            status, ms = probe_latency(server.url, payload, args.model)
            if status == 200 and ms < 3 * baseline + 50:
                recovered = time.perf_counter() - ended
                break
            time.sleep(0.1)
    rows = {r.name: r for r in stats}
    accepted, shed = rows.get("/predict (accepted)"), rows.get("/predict (shed 503)")
    rss = sampler.samples
    growth = 100 * (max(rss[len(rss) // 10:]) - rss[len(rss) // 10]) / rss[len(rss) // 10] if len(rss) > 2 else 0.0
    lines = [
        f"### {mode.capitalize()}: {factor:g}x of {args.capacity:g} req/s for {duration} ({args.model})",
        "",
        f"Command: `python -m loadtests {mode} --model {args.model} --capacity {args.capacity:g} "
        f"--users {args.users} --queue-size {args.queue_size} --payload {args.payload}`",
        f"Machine: {machine_facts()}. Idle /predict latency before the run: {baseline:.0f} ms.",
        "",
        "| outcome | requests | req/s | p50 ms | p95 ms | p99 ms | failures |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in (("accepted (200)", accepted), ("shed (503 + Retry-After)", shed)):
        if row:
            lines.append(f"| {label} | {row.requests} | {row.figure_cells()} | {row.failures} |")
    recovery = f"after {recovered:.1f} s" if recovered is not None else "NOT within 30 s"
    total_failures = sum(r.failures for r in stats if r.name != "Aggregated")
    lines += [
        "",
        f"Failures (wrong or non-200/503 answers): {total_failures}. Server RSS: start "
        f"{rss[0] / 2**20:.0f} MiB, end {rss[-1] / 2**20:.0f} MiB, growth after warm-up {growth:.1f}%. "
        f"Back to normal latency {recovery} "
        "once the load stopped.",
        "",
    ]
    publish("\n".join(lines), args.docs, f"{mode}:{args.model}")
    return 0
