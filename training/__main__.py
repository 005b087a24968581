"""``python -m training <command>``: one subcommand per module exposing ``add_arguments`` and ``main``."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from training import classify, reproduce, segment
from training.datasets import synthetic

COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "make-dataset": (synthetic, "generate the embedded VOC-style dataset (deterministic from a seed)"),
    "classify": (classify, "train a CSRA recognizer with BCE (baseline) or MSL"),
    "segment": (segment, "train a segmenter with CE, or CE then size-balanced L_sw + EWC"),
    "reproduce": (reproduce, "baseline vs MSL and CE vs L_sb on the embedded dataset; writes docs/reproduction.md"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; bad input ends with a one-line error and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
