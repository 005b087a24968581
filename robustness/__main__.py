"""``python -m robustness evaluate ...``: offline robustness evaluation of exported models (see evaluation.cli)."""

from __future__ import annotations

import argparse
import sys

from robustness.evaluation import cli

USAGE_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``prog: error: message`` and exit with status 2."""
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``robustness`` command and its subcommands."""
    parser = OneLineParser(prog="python -m robustness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    evaluate = commands.add_parser("evaluate", help="dataset-level robustness evaluation of a store model",
                                   description=cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_arguments(evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand."""
    args = build_parser().parse_args(argv)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
