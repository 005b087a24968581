"""``python -m benchmarks precision``: fp32 against its INT8 (and FP16) variants, raw and served, in one run.

For every precision the entry lists: raw ONNX Runtime images/s (the faster of the two thread layouts, batches of
``--max-batch``) and server requests/s at saturation (``python -m server --precision P``, the near-free socket
client POSTing a JPEG to /predict). One server per precision runs side by side (an idle one costs nothing) and the
windows alternate, so every ratio below comes from the same rounds: variant/fp32 raw, variant/fp32 served, and
served/raw per precision (the serving overhead). Medians over ``--rounds``.

The model: ``--store`` and ``--model`` naming an entry with variants (the demo store's), or ``--preset``: random
weights exported with the calibration data's classes, then the variants built with ``--calib`` and judged on
``--guard-data`` with a tolerance of 100 points. Random weights make the guard's figures meaningless; that mode
measures speed only.

With ``--recipes u8s8,u8s8-reduce-range,u8u8`` it compares INT8 recipes instead (``benchmarks.precision_recipes``):
each ``--model`` of ``--store`` (a comma list; segmenters read ``--seg-calib`` and ``--seg-guard-data``) is
quantised with every recipe and judged by the guard on this CPU and on an emulated AVX2-only CPU, and the start-up
re-check a server would make for each is timed here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.server import add_load_arguments, command_line, jpeg_payload, parse_size, publish, saturate
from common.compute import available_cores
from common.datasets import evaluation_set
from common.kinds import Task
from export.pipeline import VariantRequest, add_variants
from export.random_weights import export_random
from export.variants import INT8_RECIPES
from loadtests.processes import ServerProcess
from loadtests.raw_ceiling import best_raw, raw_layouts
from model_store.manifest import ONNX_FILE, entry_dir, load_manifest
from robustness.probe_check import DEFAULT_PROBE_IMAGES


def recipe_main(args: argparse.Namespace, command: str) -> int:
    """``--recipes``: every recipe of every --model, judged natively and as an AVX2-only CPU, in one run."""
    from benchmarks.precision_recipes import run  # the emulation helpers: imported only when asked

    if args.store is None:
        print("error: --recipes needs --store and --model naming trained entries", file=sys.stderr)
        return 2
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in INT8_RECIPES]
    if unknown:
        print(f"error: unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(INT8_RECIPES)}", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    data = {m: (args.calib, args.guard_data) if load_manifest(entry_dir(args.store, m), verify=False).task ==
            Task.CLASSIFICATION else (args.seg_calib, args.seg_guard_data) for m in models}
    publish(run(args.store, models, recipes, data, args.calib_images, args.guard_images, args.probe_images,
                models if args.emulate is None else [m for m in args.emulate.split(",") if m], args.threads,
                command), args.output)
    return 0


def random_entry(args: argparse.Namespace, folder: Path) -> Path:
    """Export ``--preset`` with random weights and the guard data's classes, then build and judge its variants."""
    store = folder / "model_store"
    names = evaluation_set(args.guard_data, Task.CLASSIFICATION, limit=1).class_names
    manifest = export_random(args.preset, args.model, store, seed=0, progress=True, num_classes=len(names),
                             class_names=list(names), **({"image_size": args.image_size} if args.image_size else {}))
    request = VariantRequest(tuple(args.variants.split(",")), args.calib, args.guard_data, tolerance=100.0,
                             calib_images=args.calib_images, calib_method="minmax", guard_images=args.guard_images)
    add_variants(manifest.path, request)
    return store


def markdown(command: str, model: str, size: tuple[int, int], payload: tuple[int, int], rows: dict[str, dict]) -> str:
    """The table for docs/benchmarks.md."""
    fp32 = rows["fp32"]
    lines = [f"Command: `{command}`", "",
             f"{model} at {size[1]}x{size[0]}, JPEG {payload[0]}x{payload[1]}, medians of the rounds.", "",
             "| precision | guard | raw images/s | server requests/s | served / raw | raw vs fp32 | served vs fp32 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for precision, row in rows.items():
        lines.append(f"| {precision} | {row['guard']} | {row['raw']:.1f} | {row['served']:.1f} | "
                     f"{row['served'] / row['raw']:.2f} | {row['raw'] / fp32['raw']:.2f}x | "
                     f"{row['served'] / fp32['served']:.2f}x |")
    return "\n".join(lines)


def guard_text(variant) -> str:
    """The verdict and the main delta of a variant, for the table."""
    m = variant.measures
    key = next((k for k in ("mAP_delta", "mIoU_delta") if m.get(k) is not None), None)
    return f"{variant.status}" + (f", {key.removesuffix('_delta')} {m[key]:+.2f}" if key else "")


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks precision") -> int:
    """Build or read the entry, then alternate raw and served windows for every precision."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, rounds=3)
    parser.add_argument("--image-size", type=int, help="input size for --preset")
    parser.add_argument("--variants", default="int8", help="variants to build for --preset (comma list)")
    parser.add_argument("--calib", type=Path, default=Path("data/classification"), help="calibration data (--preset)")
    parser.add_argument("--guard-data", type=Path, default=Path("data/classification"), help="guard data (--preset)")
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--guard-images", type=int, default=64)
    parser.add_argument("--payload", type=parse_size, default=(640, 480), help="JPEG size to POST")
    parser.add_argument("--output", type=Path, help="write the Markdown table here")
    recipes = parser.add_argument_group("INT8 recipes (--recipes)")
    recipes.add_argument("--recipes", help="compare these INT8 recipes (comma list from "
                         f"{', '.join(INT8_RECIPES)}) of each --model instead of timing the server")
    recipes.add_argument("--seg-calib", type=Path, default=Path("data/calibration/segmentation"),
                         help="calibration data of segmenters (--recipes)")
    recipes.add_argument("--seg-guard-data", type=Path, default=Path("data/segmentation"),
                         help="guard data of segmenters (--recipes)")
    recipes.add_argument("--probe-images", type=int, default=DEFAULT_PROBE_IMAGES, help="probe set size (--recipes)")
    recipes.add_argument("--threads", type=int, default=available_cores(),
                         help="intra-op threads of the timed start-up re-check (--recipes; default: every core)")
    recipes.add_argument("--emulate", default=None, help="models also judged on an emulated AVX2-only CPU "
                         "(--recipes; comma list, default: every --model; '' for none)")
    args = parser.parse_args(argv)
    if args.recipes:
        return recipe_main(args, command_line(prog, argv).strip())
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        store = args.store or random_entry(args, Path(tmp))
        manifest = load_manifest(entry_dir(store, args.model))
        precisions = ["fp32", *(v.precision for v in manifest.variants if v.accepted)]
        files = {"fp32": ONNX_FILE, **{v.precision: v.file for v in manifest.variants}}
        feed = {manifest.input.name: np.random.default_rng(0).random((args.max_batch, 3, *manifest.input_size),
                                                                     dtype=np.float32)}
        layouts = {p: raw_layouts(manifest.artifact(files[p]), feed, available_cores()) for p in precisions}
        flags = ["--models", args.model, "--max-batch", str(args.max_batch), "--max-delay-ms",
                 str(args.max_delay_ms), "--queue-size", str(4 * max(args.concurrency))]
        servers = {p: ServerProcess(store, [*flags, "--precision", p]).launch() for p in precisions}
        payload = jpeg_payload(*args.payload)
        raw: dict[str, list[float]] = {p: [] for p in precisions}
        served: dict[str, list[float]] = {p: [] for p in precisions}
        try:
            for server in servers.values():
                server.wait(120)
            with tqdm(total=args.rounds * len(precisions), desc="precision rounds", unit="window") as bar:
                for _ in range(args.rounds):
                    for p in precisions:
                        _, throughput = best_raw(layouts[p], feed, args.seconds)
                        raw[p].append(throughput.rate)
                        result = asyncio.run(saturate(servers[p].url, payload, args.concurrency[0], args.warmup,
                                                      args.seconds, "socket", servers[p].process.pid))
                        served[p].append(result.rate)
                        bar.update()
                        bar.write(f"{p}: raw {raw[p][-1]:.1f} images/s, server {served[p][-1]:.1f} requests/s")
        finally:
            for server in servers.values():
                server.stop()
    rows = {p: {"raw": statistics.median(raw[p]), "served": statistics.median(served[p]),
                "guard": "-" if p == "fp32" else guard_text(manifest.variant(p))} for p in precisions}
    publish(markdown(command_line(prog, argv).strip(), args.model, manifest.input_size, args.payload, rows),
            args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.precision"))
