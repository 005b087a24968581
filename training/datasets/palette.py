"""Writing PASCAL VOC label PNGs in the VOC palette (``common.labels``); ``common.label_png`` reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from common.labels import VOC_PALETTE


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
