"""Reading PASCAL VOC label PNGs (SegmentationClass / SegmentationObject) as (H, W) uint8 label maps.

Torch-free: the training loaders, the offline evaluator and the server read label maps through ``read_label_png``.
Writing them is the dataset maker's business (``training.datasets.palette.save_label_png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.labels import VOC_PALETTE

_PALETTE_LOOKUP = {tuple(int(v) for v in rgb): i for i, rgb in enumerate(VOC_PALETTE)}


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as (H, W) uint8 indices: palette (P) and grey (L) directly, RGB via the VOC palette."""
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable image; expected a label PNG") from None
    with image:
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
