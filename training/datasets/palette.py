"""PASCAL VOC label PNGs: reading and writing indexed label maps in the VOC palette (``robustness.labels``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from robustness.labels import VOC_PALETTE

_PALETTE_LOOKUP = {tuple(int(v) for v in rgb): i for i, rgb in enumerate(VOC_PALETTE)}


def save_label_png(labels: np.ndarray, path: str | Path) -> None:
    """Write a (H, W) label map with values 0..255 as a VOC-palette PNG."""
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label values must lie in 0..255, got {labels.min()}..{labels.max()}")
    height, width = labels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    image.putpalette(VOC_PALETTE.tobytes())
    image.save(path, format="PNG")


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as (H, W) uint8 indices: palette (P) and grey (L) directly, RGB via the VOC palette."""
    with Image.open(path) as image:
        if image.mode in ("P", "L"):
            return np.array(image, dtype=np.uint8)
        if image.mode not in ("RGB", "RGBA"):
            raise ValueError(f"{path}: label PNG mode {image.mode!r} not supported; expected P, L or RGB")
        rgb = np.array(image.convert("RGB"))
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    indices = np.empty(len(colours), dtype=np.uint8)
    for i, colour in enumerate(colours):
        key = tuple(int(v) for v in colour)
        if key not in _PALETTE_LOOKUP:
            raise ValueError(f"{path}: colour {key} is not in the VOC palette")
        indices[i] = _PALETTE_LOOKUP[key]
    return indices[inverse.reshape(-1)].reshape(rgb.shape[:2])
