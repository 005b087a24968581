"""Independent references for the server tests: image payloads, and the exported model run directly."""

from __future__ import annotations

import io
import re
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from scipy import special

from model_store.manifest import entry_dir, load_manifest


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish random RGB picture (uint8), so JPEG keeps it recognisable."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an array as PNG (uint16 greys become 16-bit PNGs)."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(array: np.ndarray, orientation: int | None = None, quality: int = 90,
               progressive: bool = False) -> bytes:
    """Encode an RGB array as JPEG (baseline, or progressive), optionally tagged with an EXIF orientation."""
    image = Image.fromarray(array)
    out = io.BytesIO()
    if orientation is None:
        image.save(out, format="JPEG", quality=quality, progressive=progressive)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(out, format="JPEG", quality=quality, progressive=progressive, exif=exif.tobytes())
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header declares width x height RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def reference_input(image: Image.Image, size: tuple[int, int], mean, std) -> np.ndarray:
    """The manifest's preprocessing written out plainly: RGB, bilinear stretch, /255, (x - mean) / std, CHW."""
    height, width = size
    pixels = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float64) / 255.0
    normalised = (pixels - np.asarray(mean)) / np.asarray(std)
    return normalised.transpose(2, 0, 1).astype(np.float32)


@cache
def _session(path: str) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_exported(store: Path, name: str, batch: np.ndarray) -> np.ndarray:
    """The exported ONNX file run directly with ONNX Runtime."""
    manifest = load_manifest(entry_dir(store, name))
    session = _session(str(manifest.artifact("model.onnx")))
    return session.run([manifest.output.name], {manifest.input.name: batch})[0]


def model_input(store: Path, name: str, image: Image.Image) -> np.ndarray:
    """``reference_input`` with the model's manifest values."""
    manifest = load_manifest(entry_dir(store, name))
    return reference_input(image, manifest.input.size, manifest.input.mean, manifest.input.std)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def softmax(x: np.ndarray) -> np.ndarray:
    """exp(x) / sum(exp(x)) over the last axis, in float64 (scipy's implementation, not the server's)."""
    return special.softmax(np.asarray(x, dtype=np.float64), axis=-1)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0
