"""``python -m loadtests run|compare``: Locust load tests, SLO gates and the head-to-head benchmark."""

from __future__ import annotations

import argparse
import sys

from loadtests import compare, run, stress


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; bad arguments give a one-line error and exit 2."""
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_arguments(sub.add_parser("run", help="load-test the server against an SLO file"))
    compare.add_arguments(sub.add_parser("compare", help="raw ONNX Runtime vs this server vs TorchServe"))
    stress.add_arguments(sub.add_parser("overload", help="3x capacity: immediate 503 sheds, bounded p99, recovery"))
    stress.add_arguments(sub.add_parser("soak", help="70%% of capacity for 10 minutes: failures and RSS growth"))
    args = parser.parse_args(argv)
    try:
        commands = {"run": run.main, "compare": compare.main, "overload": stress.main, "soak": stress.main}
        return commands[args.command](args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
