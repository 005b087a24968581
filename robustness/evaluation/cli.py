"""``python -m robustness evaluate``: a store model (and optionally a second one) on a dataset's test split.

    python -m robustness evaluate --model model_store/demo-classifier --data data/classification \
        --occlusion high --corruptions gaussian_noise,fog --severities 1,3,5 --limit 50 --compare model_store/other
    python -m robustness evaluate --model model_store/demo-classifier --data data/classification \
        --compare-precision int8 --limit 50      # fp32 and its INT8 variant, paired

Bad input (path, corruption name, task or class mismatch) prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from common.datasets import evaluation_set
from model_store.manifest import PRECISION_NAMES
from robustness.evaluation import EvaluationConfig, check_compatible, evaluate, open_model, write_outputs

DEFAULT_OUT = Path("runs/robustness")
PRECISIONS = PRECISION_NAMES
USAGE_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's options."""
    parser.add_argument("--model", required=True, help="store entry folder (newest version) or version folder")
    parser.add_argument("--data", required=True, help="dataset folder or file (its test split is evaluated)")
    parser.add_argument("--occlusion", default="all", help="all | high | low | b1,b3 | none (default all)")
    parser.add_argument("--corruptions", default="all", help="all | NAME,... | none (default all 15)")
    parser.add_argument("--severities", default="1-5", help="e.g. 1-5 or 1,3,5 (default 1-5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of masks, corruptions and bootstrap (default 0)")
    parser.add_argument("--compare", help="a second store model with the same classes: paired differences")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="evaluate the entry's fp32 model or one of its exported variants (default fp32)")
    parser.add_argument("--compare-precision", choices=PRECISIONS, metavar="PRECISION",
                        help="compare with the same entry at this precision: does quantisation change occlusion "
                             "and corruption robustness, not only clean accuracy?")
    parser.add_argument("--out", type=Path, help="output folder (default runs/robustness/<model>-<timestamp>)")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--batch-size", type=int, default=32, help="model batch size (default 32)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals (default 1000)")
    parser.add_argument("--checks", action=argparse.BooleanOptionalAction, default=True,
                        help="behavioural invariance / direction checks (default on)")
    parser.add_argument("--explain", type=int, default=0, metavar="N", help="RISE saliency for the first N images")


def run(args: argparse.Namespace) -> list[Path]:
    """Evaluate as the arguments say, write the outputs and return their paths."""
    config = EvaluationConfig.parse(args.occlusion, args.corruptions, args.severities, seed=args.seed,
                                    batch_size=args.batch_size, bootstrap=args.bootstrap, limit=args.limit,
                                    checks=args.checks, explain=args.explain)
    config.validate()
    if args.compare and args.compare_precision:
        raise ValueError("--compare and --compare-precision each name the second model; give one of them")
    if args.compare_precision == args.precision:
        raise ValueError(f"--compare-precision {args.compare_precision} is the precision already evaluated")
    models = [open_model(args.model, args.precision)]
    if args.compare:
        models.append(open_model(args.compare))
    if args.compare_precision:
        models.append(open_model(args.model, args.compare_precision))
    eval_set = evaluation_set(args.data, models[0].manifest.task, args.limit)
    check_compatible(models, eval_set, config)  # before the progress bar, so an error stays one line
    bar = tqdm(total=min(len(eval_set), args.limit or len(eval_set)), unit="img", file=sys.stderr,
               desc="evaluate", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        report = evaluate(models, eval_set, config, progress=progress)
    finally:
        bar.close()
    out = args.out or DEFAULT_OUT / f"{models[0].manifest.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return write_outputs(report, out)


def main(args: argparse.Namespace) -> int:
    """Run and print the written paths; errors in the input become one line on stderr and status 2."""
    try:
        paths = run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    for path in paths:
        print(path)
    return 0
