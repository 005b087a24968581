"""ImageNet-C's snow as ``imagecorruptions`` computes it, with its random layer zoomed by ``linear_zoom``.

Snow draws a random layer, zooms its centre with scipy's order-1 zoom, thresholds it and motion-blurs it. The
zoom here is ``robustness.linear_zoom`` (scipy's own float operations in numpy, the same values), the rest is
the library's code; the draws are the library's, in its order, and so is the float64 output for the same state
of numpy's global generator (tests/robustness compare them). The library's motion blur itself is left as it is:
its shifted copies cost little next to the float64 sums, whose order must stay.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from robustness.corruption_library import library as _library
from robustness.linear_zoom import zoom_rows_cols

SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))


def snow(x: Any, severity: int) -> np.ndarray:
    """``imagecorruptions.corruptions.snow`` for an RGB image."""
    c = SNOW[severity - 1]
    x = np.array(x, dtype=np.float32) / 255.0
    layer = np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    rows, cols = (math.ceil(n / float(c[2])) for n in x.shape[:2])
    top, left = (x.shape[0] - rows) // 2, (x.shape[1] - cols) // 2
    whole = (round(rows * c[2]), round(cols * c[2]))  # the library keeps the whole zoomed layer until the end
    layer = zoom_rows_cols(layer[top:top + rows, left:left + cols, np.newaxis], c[2], whole)
    layer[layer < c[3]] = 0
    layer = np.clip(layer.squeeze(), 0, 1)
    layer = _library._motion_blur(layer, radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45))
    layer = np.round(layer * 255).astype(np.uint8) / 255.0
    layer = layer[..., np.newaxis][: x.shape[0], : x.shape[1], :]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(x.shape[0], x.shape[1], 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255
