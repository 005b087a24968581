"""``python -m loadtests run``: Locust against this server (started here unless --host), with SLO gates."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from loadtests.locust_run import check_slo, format_table, parse_seconds, read_stats, require_loopback, run_locust
from loadtests.payloads import build_payloads
from loadtests.processes import ServerProcess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``run``."""
    parser.add_argument("--users", type=int, default=8, help="concurrent Locust users (1..256)")
    parser.add_argument("--spawn-rate", type=float, default=8, help="users started per second")
    parser.add_argument("--duration", default="60s", help="run time, e.g. 30s, 2m (at most 1h)")
    parser.add_argument("--host", help="target URL on 127.0.0.1 (default: start the server here)")
    parser.add_argument("--store", default="model_store", help="model store for the started server")
    parser.add_argument("--server-args", default="", help="extra flags for the started server, space separated")
    parser.add_argument("--weights", default="predict=8,segment=2,robustness=1", help="task weights per endpoint")
    parser.add_argument("--payload", default="mixed", help="payload name or 'mixed'")
    parser.add_argument("--slo", type=Path, help="SLO file (TOML) to check; violations exit 1")
    parser.add_argument("--out", type=Path, default=Path("runs/loadtest"), help="CSV/HTML output folder")


def main(args: argparse.Namespace) -> int:
    """Run one bounded load test and report; 0 = pass, 1 = SLO violated, 2 = could not run."""
    if not 1 <= args.users <= 256:
        raise ValueError(f"--users {args.users}: must lie in 1..256")
    seconds = parse_seconds(args.duration)
    if not 0 < seconds <= 3600:
        raise ValueError(f"--duration {args.duration}: must be more than 0 s and at most 1 h")
    if args.host:
        require_loopback(args.host)
    if args.slo and not args.slo.is_file():
        raise ValueError(f"--slo {args.slo}: no such file")
    payloads = args.out / "payloads"
    build_payloads(payloads)
    env = {"LOADTEST_PAYLOADS": str(payloads), "LOADTEST_WEIGHTS": args.weights, "LOADTEST_PAYLOAD": args.payload}
    server = None if args.host else ServerProcess(args.store, args.server_args.split(), args.out / "server.log")
    with server or contextlib.nullcontext():
        host = args.host or server.url
        print(f"load test: {args.users} users for {args.duration} against {host}", file=sys.stderr)
        stats = run_locust(host, args.users, args.spawn_rate, args.duration, args.out / "locust", env)
    rows = read_stats(stats)
    print(format_table(rows))
    print(f"\nCSV: {stats}  HTML: {args.out / 'locust.html'}")
    if args.slo:
        violations = check_slo(rows, args.slo)
        for v in violations:
            print(f"SLO violated: {v}", file=sys.stderr)
        if violations:
            return 1
        print(f"SLO {args.slo}: all objectives met")
    return 0
