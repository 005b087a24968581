"""``python -m benchmarks grpc``: KServe v2 ModelInfer over gRPC against the HTTP v2 binary route, same server,
same model, same tensors, one run.

One ``python -m server --grpc-port`` subprocess serves both. Each window keeps ``--concurrency`` requests in flight
through one protocol: HTTP as pre-built binary-tensor bodies (Triton's extension) over keep-alive HTTP/1.1
connections written by hand (a near-free client), gRPC as pre-built ``ModelInferRequest`` messages on one
``grpc.aio`` channel (HTTP/2 streams, as tritonclient.grpc uses it). The protocols alternate window by window
(``--rounds`` pairs) and each ratio is taken within a pair; the table shows medians. CPU milliseconds per request
are measured on both sides: the server's do not depend on what else the machine runs, and the gRPC client costs
more CPU than the hand-written HTTP one, which on a small machine takes cores from the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import orjson
from tqdm import tqdm
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from benchmarks.server import add_load_arguments, bench_entry, closed_loop, command_line, publish, socket_client
from loadtests.processes import ServerProcess, free_port
from loadtests.raw_ceiling import Throughput

PROTOCOLS = ("http", "grpc")


def http_body(model_input: str, images: np.ndarray) -> tuple[bytes, int]:
    """A v2 infer body with the binary tensor extension (output as binary too), and its JSON header's length."""
    header = orjson.dumps({"inputs": [{"name": model_input, "datatype": "FP32", "shape": list(images.shape),
                                       "parameters": {"binary_data_size": images.nbytes}}],
                           "parameters": {"binary_data_output": True}})
    return header + images.astype("<f4").tobytes(), len(header)


async def http_client(url: str, model: str, body: bytes, header_length: int) -> tuple[Callable, Callable]:
    """A request function sending the v2 binary body over one keep-alive HTTP/1.1 connection (a near-free client)."""
    return await socket_client(url, f"/v2/models/{model}/infer", body, "Content-Type: application/octet-stream\r\n"
                               f"Inference-Header-Content-Length: {header_length}")


def grpc_clients(target: str, model: str, model_input: str, images: np.ndarray,
                 concurrency: int) -> tuple[list[Callable[[], Awaitable[int]]], list[Callable]]:
    """``concurrency`` request functions sharing one grpc.aio channel, each sending the same pre-built message."""
    channel = grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 1 << 30),
                                                         ("grpc.max_receive_message_length", 1 << 30)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    tensor = pb.ModelInferRequest.InferInputTensor(name=model_input, datatype="FP32", shape=list(images.shape))
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[images.tobytes()])

    async def call() -> int:
        try:
            await stub.ModelInfer(request)
        except grpc.aio.AioRpcError:
            return 500
        return 200

    async def close() -> None:
        await channel.close()

    return [call] * concurrency, [close]


async def window(protocol: str, server: ServerProcess, target: str, model: str, model_input: str,
                 images: np.ndarray, concurrency: int, warmup: float, seconds: float) -> Throughput:
    """One timed window of one protocol at saturation."""
    if protocol == "grpc":
        calls, closers = grpc_clients(target, model, model_input, images, concurrency)
    else:
        body, header_length = http_body(model_input, images)
        pairs = [await http_client(server.url, model, body, header_length) for _ in range(concurrency)]
        calls, closers = [c for c, _ in pairs], [c for _, c in pairs]
    return await closed_loop(calls, closers, warmup, seconds, server.process.pid)


@dataclass(frozen=True)
class Pair:
    """One HTTP window and one gRPC window, back to back."""

    http: Throughput
    grpc: Throughput

    @property
    def ratio(self) -> float:
        """gRPC requests/s over HTTP requests/s."""
        return self.grpc.rate / self.http.rate


def per_request_ms(run: Throughput, side: str) -> float:
    """CPU milliseconds per answered request on one side (server or client)."""
    return 1000 * getattr(run, f"{side}_cpu") / max(run.count, 1)


def markdown(command: str, model: str, shape: list[int], concurrency: int, pairs: list[Pair]) -> str:
    """The comparison as a Markdown section: medians, then every pair."""
    def median(values) -> float:
        return float(np.median(list(values)))

    lines = [f"Command: `{command}`", "",
             f"Model `{model}`, one {shape} FP32 tensor per request, {concurrency} requests in flight, "
             f"{platform.processor() or platform.machine()}, load average at the end "
             f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}.", "",
             "| protocol | requests/s (median) | errors | server CPU ms / request | client CPU ms / request |",
             "|---|---:|---:|---:|---:|"]
    for protocol in PROTOCOLS:
        runs = [getattr(p, protocol) for p in pairs]
        lines.append(f"| {'gRPC ModelInfer' if protocol == 'grpc' else 'HTTP v2 binary'} | "
                     f"{median(r.rate for r in runs):.1f} | {sum(r.errors for r in runs)} | "
                     f"{median(per_request_ms(r, 'server') for r in runs):.2f} | "
                     f"{median(per_request_ms(r, 'client') for r in runs):.2f} |")
    lines += ["", f"gRPC / HTTP requests/s, per pair: {', '.join(f'{p.ratio:.2f}' for p in pairs)}; "
              f"median **{median(p.ratio for p in pairs):.2f}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks grpc") -> int:
    """Serve one model with --grpc-port, alternate HTTP and gRPC windows at saturation, print the comparison."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, rounds=3, rounds_help="HTTP/gRPC window pairs")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("--output", type=Path, help="write the Markdown section here")
    args = parser.parse_args(argv)
    concurrency = args.concurrency[0]
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        entry = bench_entry(args, Path(tmp))
        if entry is None:
            return 2
        store, manifest = entry
        images = np.random.default_rng(0).standard_normal((args.batch, 3, *manifest.input.size)).astype(np.float32)
        grpc_port = free_port()
        flags = ["--models", args.model, "--precision", "fp32", "--grpc-port", str(grpc_port),
                 "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
                 "--queue-size", str(4 * concurrency), "--max-body-bytes", str(max(20 << 20, 2 * images.nbytes))]
        server = ServerProcess(store, flags).start()
        target = f"127.0.0.1:{grpc_port}"
        pairs = []
        try:
            with tqdm(total=args.rounds, desc="HTTP/gRPC pairs", unit="pair") as bar:
                for _ in range(args.rounds):
                    runs = {protocol: asyncio.run(window(protocol, server, target, args.model, manifest.input.name,
                                                         images, concurrency, args.warmup, args.seconds))
                            for protocol in PROTOCOLS}
                    pairs.append(Pair(runs["http"], runs["grpc"]))
                    bar.update()
                    bar.write(f"HTTP {runs['http'].rate:.1f} requests/s, gRPC {runs['grpc'].rate:.1f} requests/s, "
                              f"ratio {pairs[-1].ratio:.2f}")
                    time.sleep(0.5)
        finally:
            server.stop()
    publish(markdown(command_line(prog, argv).strip(), args.model, list(images.shape), concurrency, pairs),
            args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.grpc"))
