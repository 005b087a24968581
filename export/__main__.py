"""``python -m export CKPT --preset NAME --name NAME``: write a verified model-store entry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.artifact_formats import DEFAULT_FORMATS, FORMATS, parse_formats
from export.guard import DEFAULT_GUARD_IMAGES, DEFAULT_SPEED_SECONDS, DEFAULT_TOLERANCE
from export.variant_request import VariantRequest
from export.variants import (
    CALIBRATION_CHOICES,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_INT8_RECIPE,
    INT8_RECIPES,
    VARIANT_FILES,
)
from model_store.manifest import Variant
from robustness.probe_check import DEFAULT_PROBE_IMAGES


def unit_interval(text: str) -> float:
    """A threshold strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} must lie strictly between 0 and 1")
    return value


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
    parser.add_argument("--threshold", type=unit_interval,
                        help="decision threshold of a multi-label (sigmoid) classifier, written into the manifest "
                             "(default: the one the checkpoint's trainer chose, else the preset's 0.5)")
    parser.add_argument("--force", action="store_true", help="replace an existing entry of that version")
    variants = parser.add_argument_group("lower-precision variants (judged by the accuracy guard)")
    variants.add_argument("--variants", default="", help=f"comma list from {', '.join(VARIANT_FILES)}: built next to "
                          "model.onnx, each accepted or rejected by the guard")
    variants.add_argument("--calib", type=Path, help="INT8 calibration: a dataset (its train split) or a folder of "
                          "images like the served ones")
    variants.add_argument("--calib-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                          help=f"calibration images used, at most (default {DEFAULT_CALIBRATION_IMAGES})")
    variants.add_argument("--calib-method", default="auto", choices=CALIBRATION_CHOICES,
                          help="activation range calibration; auto tries each and keeps the closest to fp32 on "
                               "held-out calibration images (default auto)")
    variants.add_argument("--guard-data", type=Path, help="labelled dataset whose test split judges the variants "
                          "(default: --calib when it is a dataset)")
    variants.add_argument("--guard-images", type=int, default=DEFAULT_GUARD_IMAGES,
                          help=f"test images the guard reads, at most (default {DEFAULT_GUARD_IMAGES})")
    variants.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                          help="largest drop in points of mAP (classifiers) or of mIoU and IA-mIoU (segmenters) on the "
                               f"test split that a variant may show and still pass (default {DEFAULT_TOLERANCE})")
    variants.add_argument("--guard-masked", action="store_true",
                          help="the drop under high occlusion masks (always recorded) must stay within the "
                               "tolerance too")
    variants.add_argument("--int8-recipe", default=DEFAULT_INT8_RECIPE, choices=list(INT8_RECIPES),
                          help=f"how INT8 stores its weights (default {DEFAULT_INT8_RECIPE}; see docs/benchmarks.md "
                               "for each recipe on AVX2 and AVX-512 VNNI CPUs)")
    variants.add_argument("--probe-images", type=int, default=DEFAULT_PROBE_IMAGES,
                          help="guard images kept in the entry with their fp32 outputs, so that a server on another "
                               f"CPU re-checks the variants at start (default {DEFAULT_PROBE_IMAGES}; 0: none)")
    variants.add_argument("--speed-seconds", type=float, default=DEFAULT_SPEED_SECONDS,
                          help="length of each of the guard's three timed windows per file, fp32 and each variant "
                               f"taking turns (default {DEFAULT_SPEED_SECONDS})")
    return parser.parse_args(argv)


def variant_line(variant: Variant) -> str:
    """One line per variant: the verdict, its reason, and the guard's main figures."""
    m = variant.measures
    figures = ", ".join(f"{k} {m[k]:+.2f}" if k.endswith("_delta") else f"{k} {m[k]:.3g}"
                        for k in m if m[k] is not None and (k.endswith("_delta") or k in ("speedup",
                                                                                           "top_label_agreement",
                                                                                           "pixel_agreement")))
    reason = f" ({variant.reason})" if variant.reason else ""
    return f"{variant.precision}: {variant.status}{reason}; {figures}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints a one-line error and returns non-zero on failure."""
    args = parse_args(argv)
    try:
        formats = parse_formats(args.formats)
        request = VariantRequest(args.variants, args.calib, args.guard_data, args.tolerance, args.calib_images,
                                 args.calib_method, args.guard_images, args.guard_masked, args.int8_recipe,
                                 args.probe_images, args.speed_seconds) if args.variants else None
        from export.pipeline import export_entry  # torch and timm (about 5 s): once the flags hold
        from export.source import resolve_source

        src = resolve_source(args.checkpoint, args.preset, image_size=args.image_size, lam=args.lam, heads=args.heads,
                             threshold=args.threshold)
        manifest = export_entry(src, args.name, args.version, args.store, formats, fp16=args.fp16, force=args.force,
                                variants=request)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    worst = dict(manifest.parity.max_abs_diff)
    print(f"wrote {manifest.path} ({', '.join(manifest.files)}); parity max|diff| {worst}")
    for variant in manifest.variants:
        print(variant_line(variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
