"""``python -m benchmarks tracing``: what request tracing costs, in one run.

Three servers on the same store answer /predict at saturation (``benchmarks server``'s near-free socket client),
measured in alternating windows: ``base``, the code at ``--base`` (before tracing; ``git archive``), ``none``,
this checkout with tracing and no ``--otlp-endpoint``, and ``otlp``, the same exporting every span to a local
stand-in collector (a subprocess that accepts each OTLP/HTTP POST). Requests/s ratios are taken within a round
and shown as medians; the machine is shared, so the server's CPU seconds per request, which do not depend on
what else runs, are shown beside them. Last, the in-process cost of one request's trace path (the root span
from a ``traceparent``, six stage spans, its attributes) without and with an exporter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tqdm import tqdm

from benchmarks.server import build_store, command_line, jpeg_payload, publish, saturate
from loadtests.processes import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
SERVER_FLAGS = ["--max-batch", "8", "--intra-op-threads", "1", "--decode-threads", "1"]
HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"image/jpeg"), (b"content-length", b"5000"),
           (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]


class _Collector(BaseHTTPRequestHandler):
    """Accepts every OTLP/HTTP export with 200, as a collector would, and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Silent."""


def checkout(revision: str, folder: Path) -> Path:
    """The files of ``revision`` (a commit of this repository) unpacked into ``folder``."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def trace_path_cost(exporting: bool, number: int = 5000) -> float:
    """Seconds one request's trace path takes in process (best of 5 x ``number``)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from server import tracing
    from server.tracing import START_KEY, Tracing, format_traceparent, http_carrier

    tracer = Tracing(exporter=InMemorySpanExporter() if exporting else None)

    def one() -> None:
        scope = {START_KEY: time.monotonic()}
        with tracer.request_span(scope, "POST", http_carrier(HEADERS), {"url.path": "/predict"}) as span:
            format_traceparent(span)
            now = time.monotonic()
            for name in ("admission", "receive", "decode", "queue", "inference"):
                tracing.stage(scope, name, now, now)
            tracing.set_attributes(scope, **{"inference.model": "r18", "inference.batch_size": 1})
            tracing.inference_done(scope, now)
            tracing.postprocess(scope, now)
            tracing.finish(scope, 200, None, "POST /predict", {"http.route": "/predict"})

    return min(timeit.repeat(one, number=number, repeat=5)) / number


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks tracing") -> int:
    """Run the comparison and print (or write) its Markdown."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="1c6451d~1", help="revision without tracing (default: %(default)s)")
    parser.add_argument("--revision", help="revision with tracing (default: this checkout, as it is)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating windows per server (default: 6)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed window (default: 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    parser.add_argument("--output", type=Path, help="also write the Markdown here")
    parser.add_argument("--collector", type=int, help=argparse.SUPPRESS)  # the stand-in collector's own process
    args = parser.parse_args(argv)
    if args.collector:
        ThreadingHTTPServer(("127.0.0.1", args.collector), _Collector).serve_forever()
    if args.rounds < 1 or args.seconds <= 0 or args.concurrency < 1:
        parser.error("--rounds, --seconds and --concurrency must be positive")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            base = checkout(args.base, Path(tmp) / "base")
            traced_tree = checkout(args.revision, Path(tmp) / "traced") if args.revision else ROOT
        except subprocess.CalledProcessError as exc:
            parser.error(f"git archive failed: {exc.stderr.decode().strip()}")
        store = build_store("resnet18-csra-128", "r18", Path(tmp))
        port = free_port()
        collector = subprocess.Popen([sys.executable, "-m", "benchmarks.tracing", "--collector", str(port)], cwd=ROOT)
        trees = {"base": (base, []), "none": (traced_tree, []),
                 "otlp": (traced_tree, ["--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces"])}
        servers = {name: ServerProcess(store, [*SERVER_FLAGS, "--models", "r18", *extra], Path(tmp) / f"{name}.log",
                                       env={"PYTHONPATH": str(tree)}, inherit_server_env=False)
                   for name, (tree, extra) in trees.items()}
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        loads = []
        payload = jpeg_payload(320, 240)
        here = Path.cwd()
        os.chdir(tmp)  # `python -m server` puts its working folder first on sys.path: none here, so PYTHONPATH rules
        try:
            for server in servers.values():
                server.launch()
            for server in servers.values():
                server.wait(300)
            for round_ in tqdm(range(args.rounds), desc="rounds"):
                for name in list(servers) if round_ % 2 == 0 else list(reversed(servers)):
                    server = servers[name]
                    done = asyncio.run(saturate(server.url, payload, args.concurrency, 3.0, args.seconds, "socket",
                                                server.process.pid))
                    rates[name].append(done.rate)
                    cpu[name].append(done.server_cpu / max(1, done.count))
                loads.append(os.getloadavg()[0])
            tagged = {name: server.logs().count('"trace_id"') for name, server in servers.items()}
            if tagged["base"] or not tagged["none"]:  # the servers did not run the code they were meant to
                raise RuntimeError(f"access lines with a trace id: {tagged}; expected none from base only")
        finally:
            for server in servers.values():
                server.stop()
            collector.terminate()
            os.chdir(here)
    rows = []
    traced = f"`{args.revision}`" if args.revision else "this checkout"
    for name, what in (("base", f"`{args.base}`: no tracing"), ("none", f"{traced}: tracing, no endpoint"),
                       ("otlp", f"{traced}: tracing, every span exported")):
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates["base"], strict=True))
        cpu_ratio = statistics.median(a / b for a, b in zip(cpu[name], cpu["base"], strict=True))
        rows.append(f"| {what} | {statistics.median(rates[name]):.1f} | {ratio:.3f} | "
                    f"{statistics.median(cpu[name]) * 1000:.2f} | {cpu_ratio:.3f} |")
    costs = [trace_path_cost(False) * 1e6, trace_path_cost(True) * 1e6]
    text = "\n".join([
        f"`{command_line(prog, argv)}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs; load average at the end of each round: {', '.join(f'{x:.2f}' for x in loads)})",
        "",
        f"ResNet-18-CSRA 128, random weights, 320x240 JPEG to /predict, {args.concurrency} in flight, "
        f"medians of {args.rounds} rounds of {args.seconds:g} s:",
        "",
        "| server | requests/s | ratio to base | server CPU ms / request | CPU ratio |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"One request's trace path in process: {costs[0]:.1f} µs without an exporter, {costs[1]:.1f} µs recording "
        "its 7 spans into an in-memory exporter.",
    ])
    publish(text, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
