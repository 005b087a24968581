"""``python -m benchmarks memory``: peak bytes per pixel of each step ``server.costs`` reserves, beside its figure.

Each step runs in a fresh process on one image of ``--side`` squared pixels: the input is read from a file
(the modules imported first), the peak RSS is reset (5 written to /proc/self/clear_refs), the step
runs, and the peak (VmHWM) less the RSS before it, divided by the pixels, is the figure. Linux only.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from server import costs

CHILD = r"""
import sys
import numpy as np
from pathlib import Path
from PIL import Image
from common.preprocess import InputNormaliser
from common.scores import resize_class_map
from server.images import decode_label_map, prepare_image
from server.postprocess import overlay_png, palette_png, region_statistics

Image.MAX_IMAGE_PIXELS = None
step, path, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = Path(path).read_bytes() if path != "-" else b""
normaliser = InputNormaliser((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
classes = (np.arange(64 * 64).reshape(64, 64) % 11).astype(np.uint8)
if step.startswith("render"):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))


def peak() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024


def run():
    if step == "decode":
        return prepare_image(data, (64, 64), normaliser, 10**10, True, False)
    if step == "decode_full":
        return prepare_image(data, (64, 64), normaliser, 10**10, False, True)
    if step == "truth":
        return decode_label_map(data, 10**10, 21, (side, side))
    big = resize_class_map(classes, (side, side))
    if step == "render_overlay":
        return overlay_png(rgb, big, 0.5)
    if step == "render_png":
        return palette_png(big)
    return region_statistics(big, [str(i) for i in range(11)])


open("/proc/self/clear_refs", "w").write("5")
before = peak()
out = run()
print(peak() - before)
"""


def inputs(side: int) -> dict[str, tuple[str, bytes]]:
    """name -> (step, encoded bytes) for every case measured."""
    yy, xx = np.mgrid[0:side, 0:side]
    rgb = np.stack([xx * 255 // side, yy * 255 // side, (xx + yy) % 256], -1).astype(np.uint8)
    labels = Image.fromarray((xx % 21).astype(np.uint8), "L")
    palette = labels.convert("P")
    palette.putpalette(list(range(256)) * 3)
    rgba = Image.fromarray(np.concatenate([rgb, rgb[..., :1]], -1), "RGBA")
    cases = {"RGB PNG": ("decode", Image.fromarray(rgb), {"format": "PNG"}),
             "L PNG": ("decode", labels, {"format": "PNG"}),
             "P PNG": ("decode", palette, {"format": "PNG"}),
             "P PNG with transparency": ("decode", palette, {"format": "PNG", "transparency": 0}),
             "RGBA PNG": ("decode", rgba, {"format": "PNG"}),
             "LA PNG": ("decode", rgba.convert("LA"), {"format": "PNG"}),
             "16-bit grey PNG": ("decode", Image.fromarray((xx * 16).astype(np.uint16)), {"format": "PNG"}),
             "RGB WebP": ("decode", Image.fromarray(rgb), {"format": "WEBP", "quality": 80}),
             "baseline JPEG, draft": ("decode", Image.fromarray(rgb), {"format": "JPEG"}),
             "progressive JPEG, draft": ("decode", Image.fromarray(rgb), {"format": "JPEG", "progressive": True}),
             "baseline JPEG, full size kept": ("decode_full", Image.fromarray(rgb), {"format": "JPEG"}),
             "progressive JPEG, full size kept": ("decode_full", Image.fromarray(rgb),
                                                  {"format": "JPEG", "progressive": True}),
             "truth PNG": ("truth", labels, {"format": "PNG"})}
    out = {}
    for name, (step, image, options) in cases.items():
        buffer = io.BytesIO()
        image.save(buffer, **options)
        out[name] = (step, buffer.getvalue())
    for fmt in costs.RENDER_BYTES:
        out[f"/segment {fmt} answer"] = (f"render_{fmt}", b"")
    return out


def reserved(name: str, side: int) -> float:
    """What ``server.costs`` reserves for the case, in bytes per pixel of the full size."""
    if name.startswith("/segment"):
        return costs.RENDER_BYTES[name.split()[1]]
    if name == "truth PNG":
        return costs.TRUTH_BYTES
    modes = {"L PNG": "L", "P PNG": "P", "P PNG with transparency": "P", "RGBA PNG": "RGBA", "LA PNG": "LA",
             "16-bit grey PNG": "I;16"}
    per_pixel = costs.DECODE_BYTES[modes.get(name, "RGB")] + costs.FORMAT_BYTES.get(name.split()[1].upper(), 0.0)
    if "draft" in name:
        per_pixel /= 64  # decoded at 1/8 of each side (the DCT scale that still covers 64 px, for side >= 512)
    if "progressive" in name:
        per_pixel += costs.COEFFICIENT_BYTES * 1.5
    if "kept" in name:
        per_pixel = max(per_pixel, costs.HELD_RGB_BYTES)
    return per_pixel


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Measure every case and print peak bytes per pixel beside ``server.costs``'s figure."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4000, help="images are side x side pixels")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    print(f"{'case':36} {'measured B/px':>14} {'reserved B/px':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for name, (step, data) in inputs(args.side).items():
            path = Path(folder) / "input"
            path.write_bytes(data)
            result = subprocess.run([sys.executable, "-c", CHILD, step, str(path) if data else "-", str(args.side)],
                                    capture_output=True, text=True, cwd=root)
            if result.returncode:
                print(f"{name:36} failed: {result.stderr.strip().splitlines()[-1]}")
                continue
            measured = int(result.stdout.split()[-1]) / args.side**2
            print(f"{name:36} {measured:14.2f} {reserved(name, args.side):14.2f}", flush=True)
    return 0
