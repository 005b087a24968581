"""uint8 RGB pictures -> the model's float32 NCHW input, as a manifest's input spec describes (torch-free).

The server and the offline evaluation prepare images with these same functions, so a figure measured
offline is a figure about what the server feeds the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def resize_to_input(rgb: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Stretch to the model's (height, width) with bilinear filtering (aspect not kept, no crop)."""
    height, width = size
    return rgb if rgb.size == (width, height) else rgb.resize((width, height), Image.BILINEAR)


class InputNormaliser:
    """uint8 HWC RGB -> float32 CHW: divide by 255, subtract mean, divide by std (per channel).

    The 256 possible results per channel are computed once (in float64, rounded to float32 like the
    plain formula) and looked up, which is about three times faster than the arithmetic per pixel.
    """

    def __init__(self, mean: Any, std: Any) -> None:
        std_arr = np.asarray(std, dtype=np.float64)
        if std_arr.shape != (3,) or np.any(std_arr <= 0):
            raise ValueError(f"std {std!r} must be three positive numbers")
        mean_arr = np.asarray(mean, dtype=np.float64)
        if mean_arr.shape != (3,):
            raise ValueError(f"mean {mean!r} must be three numbers")
        self.mean, self.std = mean_arr, std_arr
        levels = np.arange(256, dtype=np.float64) / 255.0
        self.tables = [((levels - m) / s).astype(np.float32) for m, s in zip(mean_arr, std_arr, strict=True)]

    def __call__(self, resized: Image.Image) -> np.ndarray:
        """The (3, H, W) float32 model input for one resized RGB image."""
        width, height = resized.size
        out = np.empty((3, height, width), dtype=np.float32)
        for channel, band in enumerate(resized.split()):
            np.take(self.tables[channel], np.asarray(band), out=out[channel])
        return out

    def restore(self, tensor: np.ndarray) -> Image.Image:
        """The uint8 RGB image a (3, H, W) tensor of this normaliser was made from.

        Exact: x * std + mean recovers level / 255 to within about 1e-7, far inside the 1/510 that rounding
        to the nearest level forgives.
        """
        _, height, width = tensor.shape
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        for channel in range(3):
            level = (tensor[channel] * np.float32(self.std[channel]) + np.float32(self.mean[channel])) * 255
            pixels[..., channel] = np.clip(np.rint(level), 0, 255)
        return Image.fromarray(pixels, mode="RGB")

    def fill_value(self) -> np.ndarray:
        """The uint8 RGB colour that a normalised 0 (a mask hole) stands for."""
        return np.clip(np.round(self.mean * 255.0), 0, 255).astype(np.uint8)
