"""ImageNet-C's zoom blur, frost, brightness and elastic transform as ``imagecorruptions`` computes them, without
repeating work between calls.

- Zoom blur draws nothing at random: severity s averages the image with zoomed copies at the factors
  ``ZOOM_FACTORS[s - 1]``, and the five severities share 24 distinct factors among their 63. The zoomed copies
  of the last image are kept (per thread), so an evaluation that runs every severity on one image zooms it 24
  times instead of 63. Each copy is the library's ``clipped_zoom`` (its crop, then scipy's order-1 zoom computed
  by ``robustness.linear_zoom`` in numpy with scipy's own float operations), summed in the library's order.
- Frost reads one of the library's frost pictures from disk and resizes it for every call; the resized
  picture depends only on the file and the image size, so it is read and resized once.
- Brightness converts the image to HSV (skimage's ``rgb2hsv``, the larger part of its cost), raises V and
  converts back; the HSV of the last image is kept (per thread), so the five severities convert it once.
- Elastic transform samples the image at displaced coordinates with ``map_coordinates`` (order 1) over three
  axes, the channel coordinate being whole; its weights there are 1 and 0, so each channel sampled on its own
  in two axes gives the same float32 values (the same products, less the exact zeros) at half the work.

All take a PIL image and a severity and return the library function's float64 output for the same state
of numpy's global generator (tests/robustness compare them with the library's output).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import map_coordinates

from robustness.corruption_library import library as _library
from robustness.linear_zoom import zoom_rows_cols

ZOOM_FACTORS = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))
FROST_PARAMETERS = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
ELASTIC_ALPHA = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


class LastImage(threading.local):
    """What one thread computed from the image it worked on last (zoomed copies by factor, its HSV)."""

    def __init__(self) -> None:
        self.image_key: bytes = b""
        self.values: dict[Any, np.ndarray] = {}

    def get(self, key: bytes, what: Any, make: Callable[[], np.ndarray]) -> np.ndarray:
        """``make()`` for the image ``key``, computed once per image and ``what``."""
        if key != self.image_key:
            self.image_key, self.values = key, {}
        found = self.values.get(what)
        if found is None:
            found = self.values[what] = make()
        return found


def image_key(pixels: np.ndarray) -> bytes:
    """A digest of an image's pixels and shape."""
    return hashlib.blake2b(pixels.tobytes(), digest_size=16, person=str(pixels.shape).encode()[:16]).digest()


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The library's ``clipped_zoom(x, factor)[:H, :W]`` of a float32 (H, W, 3) image (``linear_zoom``)."""
    rows = int(np.ceil(x.shape[0] / float(factor)))
    top = (x.shape[0] - rows) // 2
    cols = int(np.ceil(x.shape[1] / float(factor)))
    left = (x.shape[1] - cols) // 2
    return zoom_rows_cols(x[top:top + rows, left:left + cols], factor, x.shape[:2])


_LAST = LastImage()


def zoom_blur(x: Any, severity: int) -> np.ndarray:
    """``imagecorruptions.corruptions.zoom_blur`` for an RGB image, reusing zoomed copies between severities."""
    pixels = np.array(x)
    key = image_key(pixels)
    factors = ZOOM_FACTORS[severity - 1]
    x = (pixels / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        layer = _LAST.get(key, ("zoom", float(factor)), lambda f=float(factor): clipped_zoom(x, f))
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


def brightness(x: Any, severity: int) -> np.ndarray:
    """``imagecorruptions.corruptions.brightness`` for an RGB image, converting each image to HSV once."""
    pixels = np.array(x)
    hsv = _LAST.get(image_key(pixels), "hsv", lambda: _library.sk.color.rgb2hsv(pixels / 255.0)).copy()
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + BRIGHTNESS[severity - 1], 0, 1)
    return np.clip(_library.sk.color.hsv2rgb(hsv), 0, 1) * 255


def elastic_transform(image: Any, severity: int) -> np.ndarray:
    """``imagecorruptions.corruptions.elastic_transform`` for an RGB image, sampling one channel at a time."""
    image = np.array(image, dtype=np.float32) / 255.0
    shape = image.shape
    sigma = np.array(shape[:2]) * 0.01
    alpha = ELASTIC_ALPHA[severity - 1]
    max_dx = max_dy = shape[0] * 0.005
    dx = (_library.gaussian(np.random.uniform(-max_dx, max_dx, size=shape[:2]), sigma, mode="reflect",
                            truncate=3) * alpha).astype(np.float32)
    dy = (_library.gaussian(np.random.uniform(-max_dy, max_dy, size=shape[:2]), sigma, mode="reflect",
                            truncate=3) * alpha).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    coordinates = np.stack([rows + dy, cols + dx])
    sampled = np.stack([map_coordinates(image[:, :, channel], coordinates, order=1, mode="reflect")
                        for channel in range(shape[2])], axis=-1)
    return np.clip(sampled, 0, 1) * 255
