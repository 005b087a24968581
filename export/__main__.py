"""``python -m export CKPT --preset NAME --name NAME``: write a verified model-store entry."""

from __future__ import annotations

import argparse
import sys

from export.pipeline import DEFAULT_FORMATS, FORMATS, export_entry, parse_formats
from export.source import resolve_source


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("checkpoint", help="training checkpoint or reference .pth (e.g. msl_c_voc.pth)")
    parser.add_argument("--preset", help="architecture preset (default: the checkpoint's own, else inferred)")
    parser.add_argument("--name", required=True, help="model name in the store, e.g. voc-resnet101")
    parser.add_argument("--version", default="1", help="entry version (default 1)")
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                        help=f"comma list from {', '.join(FORMATS)} (onnx is always written)")
    parser.add_argument("--fp16", action="store_true", help="float16 weights (parity tolerance 2e-2)")
    parser.add_argument("--store", default="model_store", help="model store folder (default model_store)")
    parser.add_argument("--image-size", type=int, help="override the preset's input size")
    parser.add_argument("--lam", type=float, help="override the CSRA lambda")
    parser.add_argument("--heads", type=int, help="override the CSRA head count")
    parser.add_argument("--force", action="store_true", help="replace an existing entry of that version")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints a one-line error and returns non-zero on failure."""
    args = parse_args(argv)
    try:
        formats = parse_formats(args.formats)
        src = resolve_source(args.checkpoint, args.preset, image_size=args.image_size, lam=args.lam, heads=args.heads)
        manifest = export_entry(src, args.name, args.version, args.store, formats, fp16=args.fp16, force=args.force)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    worst = dict(manifest.parity.max_abs_diff)
    print(f"wrote {manifest.path} ({', '.join(manifest.files)}); parity max|diff| {worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
