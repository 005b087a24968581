"""``python -m benchmarks masks``: time irregular-mask generation per ratio bucket."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

from robustness.masks import BUCKETS, MASK_GENERATOR_PRESETS, masks, parse_ratio


def time_bucket(n: int, size: int, bucket: str, seed: int, generator: str) -> tuple[float, float]:
    """Milliseconds per mask and mean measured ratio for n masks of one bucket at size x size."""
    masks(2, size, size, bucket, seed + 1, generator)  # warm-up: imports, allocator
    start = time.perf_counter()
    batch = masks(n, size, size, bucket, seed, generator)
    elapsed = time.perf_counter() - start
    return 1000.0 * elapsed / n, float(batch.mean())


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks masks") -> int:
    """Print a table of ms per mask by bucket and image size."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="masks timed per bucket and size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 224], help="square image sides")
    parser.add_argument("--buckets", nargs="+", default=list(BUCKETS), help="bucket names or a-b ranges")
    parser.add_argument("--generator", default="irregular", choices=list(MASK_GENERATOR_PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.n < 1 or any(s < 1 for s in args.sizes) or args.seed < 0:
            raise ValueError(f"--n {args.n}, --sizes {args.sizes} and --seed {args.seed} must be positive")
        for bucket in args.buckets:
            parse_ratio(bucket)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    rows = []
    jobs = [(size, bucket) for size in args.sizes for bucket in args.buckets]
    for size, bucket in tqdm(jobs, desc="buckets", unit="bucket", file=sys.stderr):
        try:
            ms, ratio = time_bucket(args.n, size, bucket, args.seed, args.generator)
        except ValueError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        rows.append((size, bucket, ms, ratio))
    print(f"generator={args.generator} n={args.n} per bucket, numpy {np.__version__}, one process")
    print(f"{'size':>9} {'bucket':>10} {'range':>12} {'ms/mask':>8} {'mean ratio':>10}")
    for size, bucket, ms, ratio in rows:
        lo, hi = parse_ratio(bucket)
        print(f"{size:>4}x{size:<4} {bucket:>10} {f'({lo:g},{hi:g}]':>12} {ms:8.2f} {ratio:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.masks"))
