"""``python -m benchmarks ray``: /predict requests/s and latency through uvicorn against Ray Serve, one run.

Three targets serve the same store on 127.0.0.1, one after the other: (a) the plain server (``python -m server``,
uvicorn), (b) ``python -m server.ray`` with 1 replica holding every core, (c) ``python -m server.ray`` with one
replica per core (each replica's intra-op and decode threads follow its ``num_cpus``). For each target and each
``--concurrency``, that many clients keep a JPEG POST to /predict in flight (httpx.AsyncClient, or the near-free
hand-written ``socket`` client of ``benchmarks server``); answers completed in ``--rounds`` timed windows of
``--seconds`` (after ``--warmup`` s of untimed load) count. The table shows requests/s, p50/p95 latency, how many
distinct replicas answered, CPU milliseconds per answer (every process of the target, Ray's own included, plus the
load generator), and each Ray row's throughput over the plain server's at the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import ray
from tqdm import tqdm

from benchmarks.server import add_load_arguments, build_store, command_line, jpeg_payload, publish
from common.compute import available_cores
from loadtests.processes import RayServeProcess, ServerProcess, session_cpu
from model_store.manifest import entry_dir, load_manifest
from server.ray import REPLICA_HEADER


def process_name(pid: int) -> str:
    """A process's name as ps shows it (Ray names its workers ray::ProxyActor, ray::ServeReplica...)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


@dataclass
class Window:
    """Answers completed inside the timed windows of one target at one concurrency."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful answers only
    errors: int = 0
    replicas: set[str] = field(default_factory=set)
    server_cpu: float = 0.0  # CPU seconds of every process of the server's session (Ray's included)
    by_process: dict[str, float] = field(default_factory=dict)  # the same, by process name
    client_cpu: float = 0.0  # CPU seconds of the load generator

    def cpu_ms(self) -> tuple[float, float]:
        """CPU milliseconds per answer: (server, load generator)."""
        count = max(1, len(self.latencies) + self.errors)
        return 1000 * self.server_cpu / count, 1000 * self.client_cpu / count

    @property
    def rate(self) -> float:
        """Successful answers per second."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return 1000 * float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


async def _httpx_calls(url: str, payload: bytes, concurrency: int) -> tuple[list, list]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.AsyncClient(base_url=url, limits=limits, timeout=60)
    headers = {"Content-Type": "image/jpeg"}

    async def call() -> tuple[int, str]:
        response = await client.post("/predict", content=payload, headers=headers)
        return response.status_code, response.headers.get(REPLICA_HEADER, "")

    return [call] * concurrency, [client.aclose]


async def _socket_calls(url: str, payload: bytes, concurrency: int) -> tuple[list, list]:
    host, port = url.removeprefix("http://").split(":")
    request = (b"POST /predict HTTP/1.1\r\nHost: %s\r\nContent-Type: image/jpeg\r\n"  # the server checks Host
               b"Content-Length: %d\r\n\r\n" % (host.encode(), len(payload))) + payload
    calls, closers = [], []
    for _ in range(concurrency):
        reader, writer = await asyncio.open_connection(host, int(port))

        async def call(reader=reader, writer=writer) -> tuple[int, str]:
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            fields = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            await reader.readexactly(int(fields["content-length"]))
            return int(head[9:12]), fields.get(REPLICA_HEADER.lower(), "")

        async def close(writer=writer) -> None:
            writer.close()

        calls.append(call)
        closers.append(close)
    return calls, closers


async def saturate(url: str, payload: bytes, concurrency: int, warmup: float, seconds: float, client: str,
                   window: Window, sid: int) -> None:
    """Keep ``concurrency`` requests in flight; add the answers (and the CPU time of the session ``sid`` and of this
    process) inside the timed window to ``window``."""
    make = _httpx_calls if client == "httpx" else _socket_calls
    calls, closers = await make(url, payload, concurrency)
    start = time.perf_counter()
    window_start, window_end = start + warmup, start + warmup + seconds

    async def worker(call) -> None:
        while time.perf_counter() < window_end:
            sent = time.perf_counter()
            status, replica = await call()
            now = time.perf_counter()
            if window_start <= now < window_end:
                if status == 200:
                    window.latencies.append(now - sent)
                    window.replicas.add(replica)
                else:
                    window.errors += 1

    async def clock() -> None:
        await asyncio.sleep(warmup)
        client_start, server_start = time.process_time(), session_cpu(sid)
        await asyncio.sleep(seconds)
        server_end = session_cpu(sid)
        window.client_cpu += time.process_time() - client_start
        for pid, cpu in server_end.items():
            name = process_name(pid)
            window.by_process[name] = window.by_process.get(name, 0.0) + cpu - server_start.get(pid, 0.0)
        window.server_cpu = sum(window.by_process.values())

    await asyncio.gather(clock(), *(worker(call) for call in calls))
    window.seconds += seconds
    for close in closers:
        await close()


@dataclass(frozen=True)
class Target:
    """One way of serving the store."""

    label: str
    replicas: int  # 0: the plain server


def markdown(rows: list[tuple[Target, int, Window]], args: argparse.Namespace, size: tuple[int, int],
             command: str) -> str:
    """The docs section: command, machine, table."""
    plain = {concurrency: window.rate for target, concurrency, window in rows if target.replicas == 0}
    lines = [
        "## Ray Serve scale-out against the plain server (`benchmarks/ray_serve.py`)",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {platform.machine()}, {available_cores()} cores available (shared with other jobs), no GPU, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}, Ray {ray.__version__}. Model "
        f"`{args.preset}` (random weights) at {size[0]}x{size[1]}, CPUExecutionProvider, `--max-batch "
        f"{args.max_batch} --max-delay-ms {args.max_delay_ms:g}`, {size[0]}x{size[1]} JPEG uploads, client "
        f"`{args.client}` on the same cores. {args.rounds} windows of {args.seconds:g} s per row (after "
        f"{args.warmup:g} s of untimed load each); latency is per request, from send to the whole answer. Server CPU "
        "counts every process of the target's session (for Ray: the driver, GCS, raylet, Serve controller, proxy "
        "and replicas), so it does not depend on what else runs on the machine.",
        "",
        "| target | in flight | requests/s | p50 ms | p95 ms | errors | replicas seen | CPU ms/request server "
        "+ client | vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target, concurrency, window in rows:
        ratio = window.rate / plain[concurrency] if plain.get(concurrency) else float("nan")
        seen = len(window.replicas - {""}) if target.replicas else "-"
        server_ms, client_ms = window.cpu_ms()
        lines.append(f"| {target.label} | {concurrency} | {window.rate:.1f} | {window.percentile(50):.0f} "
                     f"| {window.percentile(95):.0f} | {window.errors} | {seen} | {server_ms:.1f} + {client_ms:.1f} "
                     f"| {ratio:.2f} |")
    lines += ["", "Server CPU ms per request by process (largest first):", ""]
    for target, concurrency, window in rows:
        count = max(1, len(window.latencies) + window.errors)
        parts = [(name, 1000 * cpu / count) for name, cpu in sorted(window.by_process.items(), key=lambda kv: -kv[1])]
        lines.append(f"- {target.label}, {concurrency} in flight: "
                     + ", ".join(f"`{name}` {ms:.1f}" for name, ms in parts if ms >= 0.05))
    return "\n".join(lines) + "\n"


def measure(url: str, sid: int, payload: bytes, args: argparse.Namespace, concurrency: int, bar: tqdm) -> Window:
    """``--rounds`` timed windows against one target, whose processes form session ``sid``."""
    window = Window()
    for _ in range(args.rounds):
        asyncio.run(saturate(url, payload, concurrency, args.warmup, args.seconds, args.client, window, sid))
        bar.update()
    return window


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks ray") -> int:
    """Measure the three targets one after the other and print the table (and write it with --output)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, rounds=2)
    parser.add_argument("--client", choices=["httpx", "socket"], default="httpx", help="load generator")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, available_cores()],
                        help="Ray Serve replica counts to measure (the cores are shared out among the replicas)")
    parser.add_argument("--output", type=Path, help="write the Markdown section here")
    args = parser.parse_args(argv)
    cores = available_cores()
    if min(args.concurrency) < 1 or min(args.replicas) < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--concurrency, --replicas, --rounds and --seconds must be positive")

    targets = [Target("plain server (uvicorn)", 0)]
    targets += [Target(f"Ray Serve, {n} replica{'s' if n > 1 else ''}", n) for n in args.replicas]
    rows: list[tuple[Target, int, Window]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        store = args.store or build_store(args.preset, args.model, Path(tmp))
        manifest = load_manifest(entry_dir(store, args.model))
        height, width = manifest.input.size
        payload = jpeg_payload(width, height)
        flags = ["--models", args.model, "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
                 "--queue-size", str(4 * max(args.concurrency))]
        ray_args = [f"{flag.removeprefix('--').replace('-', '_')}={value}"
                    for flag, value in zip(flags[::2], flags[1::2], strict=True)]
        with tqdm(total=len(targets) * len(args.concurrency) * args.rounds, desc="bench windows", unit="window") as bar:
            for target in targets:
                if target.replicas == 0:
                    server = ServerProcess(store, flags)
                else:
                    server = RayServeProcess(store, target.replicas, max(1, cores // target.replicas), ray_args,
                                             log_path=Path(tmp) / f"ray-{target.replicas}.log", cpus=cores)
                with server:
                    for concurrency in args.concurrency:
                        window = measure(server.url, server.process.pid, payload, args, concurrency, bar)
                        rows.append((target, concurrency, window))
                        bar.write(f"{target.label} x{concurrency}: {window.rate:.1f} requests/s, p50 "
                                  f"{window.percentile(50):.0f} ms, p95 {window.percentile(95):.0f} ms, "
                                  f"{window.errors} errors, server CPU {window.cpu_ms()[0]:.1f} ms/request")
    publish(markdown(rows, args, (width, height), command_line(prog, argv).strip()), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.ray_serve"))
