"""``python -m benchmarks COMMAND [flags]``: the project's benchmarks
(``COMMAND --help``)."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "runtimes": "eager vs TorchScript vs ONNX Runtime on one random-weight model",
    "masks": "irregular-mask generation time per ratio bucket",
    "server": "server requests/s against raw ONNX Runtime images/s",
    "robustness": "/robustness latency against one batched inference of n+1 images",
    "ray": "/predict requests/s and latency: plain server against Ray Serve with 1 and N replicas",
    "precision": "fp32 against its INT8/FP16 variants: raw images/s and server requests/s, one run",
    "request-path": "each step of a request inside the server (decode, JSON, thread hops), before and after",
    "memory": "peak bytes per pixel of each step the server reserves memory for, beside server.costs",
    "gpu": "raw vs served, first batch per size, /robustness vs one batch, on the GPU; docs/benchmarks-gpu.md",
    "lab-speed": "python -m robustness evaluate before and after its speed-up: perturbation, figures, one run",
    "grpc": "KServe v2 ModelInfer over gRPC against the HTTP v2 binary route: requests/s and CPU, one run",
    "reload": "latency and errors while a model is reloaded under load, against steady load, one run",
    "tracing": "/predict requests/s and CPU per request before tracing, with it, and exporting every span",
}
# command -> module under benchmarks/, where the names differ
MODULES = {"ray": "ray_serve", "request-path": "request_path", "lab-speed": "lab_speed"}


def main(argv: list[str] | None = None) -> int:
    """Hand the flags after the subcommand to ``benchmarks.<subcommand>.main``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        name = MODULES.get(argv[0], argv[0])
        module = importlib.import_module(f"benchmarks.{name}")  # imported only when asked: each is heavy
        return module.main(argv[1:], prog=f"python -m benchmarks {argv[0]}")
    parser = argparse.ArgumentParser(prog="python -m benchmarks", usage=f"%(prog)s {{{','.join(COMMANDS)}}} [flags]",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="commands:\n" + "\n".join(f"  {name:<12} {text}"
                                                                      for name, text in COMMANDS.items()))
    parser.add_argument("command", choices=list(COMMANDS), help="the benchmark to run; its flags follow it")
    parser.parse_known_args(argv)  # --help, or an error for a missing or unknown command (exit 2)
    return 2


if __name__ == "__main__":
    sys.exit(main())
