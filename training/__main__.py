"""``python -m training <command>``: the flags come from ``training.arguments`` (torch-free, so ``--help`` answers at
once); the command's module, which loads torch, is imported only to run it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from training import arguments

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str, str]] = {
    "make-dataset": (arguments.make_dataset_arguments, "training.datasets.synthetic",
                     "generate the embedded VOC-style dataset (deterministic from a seed)"),
    "classify": (arguments.classify_arguments, "training.classify",
                 "train a CSRA recognizer with BCE (baseline) or MSL"),
    "segment": (arguments.segment_arguments, "training.segment",
                "train a segmenter with CE, or CE then size-balanced L_sw + EWC"),
    "reproduce": (arguments.reproduce_arguments, "training.reproduce",
                  "baseline vs MSL and CE vs L_sb on the embedded dataset; writes docs/reproduction.md"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; bad input ends with a one-line error and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        importlib.import_module(args.module).main(args)
    except (ValueError, OSError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
