"""ImageNet-C's zoom blur and frost as ``imagecorruptions`` computes them, without repeating work between calls.

- Zoom blur draws nothing at random: severity s averages the image with zoomed copies at the factors
  ``ZOOM_FACTORS[s - 1]``, and the five severities share 24 distinct factors among their 63. The zoomed copies
  of the last image are kept (per thread), so an evaluation that runs every severity on one image zooms it 24
  times instead of 63. Each copy is the library's own ``clipped_zoom``, summed in the library's order.
- Frost reads one of the library's frost pictures from disk and resizes it for every call; the resized
  picture depends only on the file and the image size, so it is read and resized once.

Both take a PIL image and a severity and return the library function's float64 output for the same state
of numpy's global generator (tests/robustness compare them with the library's output).
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from robustness.corruption_library import library as _library

ZOOM_FACTORS = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))
FROST_PARAMETERS = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


class ZoomedCopies(threading.local):
    """One thread's zoomed copies of the image it zoomed last, keyed by zoom factor."""

    def __init__(self) -> None:
        self.image_key: bytes = b""
        self.layers: dict[float, np.ndarray] = {}

    def layer(self, x: np.ndarray, key: bytes, factor: float) -> np.ndarray:
        """``clipped_zoom(x, factor)`` cropped to x's size, computed once per image (``key``) and factor."""
        if key != self.image_key:
            self.image_key, self.layers = key, {}
        found = self.layers.get(factor)
        if found is None:
            found = self.layers[factor] = _library.clipped_zoom(x, factor)[: x.shape[0], : x.shape[1], :]
        return found


_ZOOMED = ZoomedCopies()


def zoom_blur(x: Any, severity: int) -> np.ndarray:
    """``imagecorruptions.corruptions.zoom_blur`` for an RGB image, reusing zoomed copies between severities."""
    pixels = np.array(x)
    key = hashlib.blake2b(pixels.tobytes(), digest_size=16, person=str(pixels.shape).encode()[:16]).digest()
    factors = ZOOM_FACTORS[severity - 1]
    x = (pixels / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        layer = _ZOOMED.layer(x, key, float(factor))
        try:
            out += layer
        except ValueError:  # a zoomed copy smaller than the image, as the library handles it
            out[: layer.shape[0], : layer.shape[1]] += layer
    x = (x + out) / (len(factors) + 1)
    return np.clip(x, 0, 1) * 255


@lru_cache(maxsize=len(FROST_FILES))
def _frost_original(index: int) -> np.ndarray:
    """Frost picture ``index`` as the library reads it (BGR); read-only."""
    picture = cv2.imread(_library.resource_filename(_library.__name__, f"./frost/{FROST_FILES[index]}"))
    picture.setflags(write=False)
    return picture


@lru_cache(maxsize=32)
def _frost_resized(index: int, size: tuple[int, int]) -> np.ndarray:
    """Frost picture ``index`` resized to ``size`` (width, height) as the library resizes it; read-only."""
    resized = cv2.resize(_frost_original(index), dsize=size, interpolation=cv2.INTER_CUBIC)
    resized.setflags(write=False)
    return resized


def frost(x: Any, severity: int) -> np.ndarray:
    """``imagecorruptions.corruptions.frost`` for an RGB image, with each resized frost picture made once."""
    c = FROST_PARAMETERS[severity - 1]
    index = np.random.randint(5)
    frost_shape = _frost_original(index).shape
    x_shape = np.array(x).shape
    if frost_shape[0] >= x_shape[0] and frost_shape[1] >= x_shape[1]:
        scaling_factor = 1
    elif frost_shape[0] < x_shape[0] and frost_shape[1] >= x_shape[1]:
        scaling_factor = x_shape[0] / frost_shape[0]
    elif frost_shape[0] >= x_shape[0] and frost_shape[1] < x_shape[1]:
        scaling_factor = x_shape[1] / frost_shape[1]
    else:
        scaling_factor = np.maximum(x_shape[0] / frost_shape[0], x_shape[1] / frost_shape[1])
    scaling_factor *= 1.1
    new_shape = (int(np.ceil(frost_shape[1] * scaling_factor)), int(np.ceil(frost_shape[0] * scaling_factor)))
    frost_rescaled = _frost_resized(index, new_shape)
    x_start = np.random.randint(0, frost_rescaled.shape[0] - x_shape[0])
    y_start = np.random.randint(0, frost_rescaled.shape[1] - x_shape[1])
    crop = frost_rescaled[x_start:x_start + x_shape[0], y_start:y_start + x_shape[1]][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(x) + c[1] * crop, 0, 255)
