"""Untrusted bytes -> RGB image -> the model's NCHW float32 input, exactly as the manifest describes."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from robustness.labels import VOID

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white


class ImageRejectedError(ValueError):
    """Bytes that cannot become a model input; carries the HTTP status and a short code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus the size the user sees (after EXIF orientation, before any draft reduction)."""

    rgb: Image.Image
    original_size: tuple[int, int]  # (width, height)
    format: str


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit integer) grey to 8 bits by keeping the high byte, then to RGB."""
    values = np.asarray(image).astype(np.int64)
    eight_bit = image.mode == "I" and values.size and values.max() <= 255  # 8-bit data stored as 32-bit ints
    grey = values if eight_bit else np.clip(values, 0, 65535) >> 8
    return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha over white, 16-bit grey by its high byte, CMYK/P/L by Pillow."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _sixteen_bit_to_rgb(image)
    if mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


UNREADABLE = {  # what is sent -> (error code for unreadable bytes, error code for a corrupt header, wording)
    "image": ("not_an_image", "invalid_image", "bytes sent"),
    "truth": ("invalid_truth", "invalid_truth", "truth bytes"),
}


def open_untrusted(data: bytes, max_pixels: int, subject: str) -> Image.Image:
    """``Image.open`` on untrusted bytes (header only) within the pixel limit; every failure is an
    ImageRejectedError (413 past ``max_pixels``)."""
    unreadable, corrupt, wording = UNREADABLE[subject]
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejectedError(400, unreadable,
                                 f"the {len(data)} {wording} are not an image format Pillow can read") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard, past 2 * Image.MAX_IMAGE_PIXELS
        raise ImageRejectedError(413, "image_too_large",
                                 f"{subject}: {exc} The limit here is {max_pixels:,} pixels (--max-pixels).") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejectedError(400, corrupt, f"the {subject} header is corrupt: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejectedError(413, "image_too_large", f"the {subject} declares {width}x{height} = "
                                 f"{width * height:,} pixels; the limit is {max_pixels:,} (--max-pixels)")
    return image


def decode_image(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None) -> DecodedImage:
    """Decode untrusted bytes to RGB with EXIF orientation applied.

    The pixel limit is checked on the header before any pixel is decoded. With ``draft_size`` (w, h),
    JPEGs are decoded at the smallest DCT scale that still covers that size.
    """
    if not data:
        raise ImageRejectedError(400, "empty_body", "the image is empty (0 bytes)")
    image = open_untrusted(data, max_pixels, "image")
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageRejectedError(400, "invalid_image", f"the image declares an empty size {width}x{height}")
    kind = image.format or ""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        if draft_size is not None and kind == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        rgb = to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRejectedError(400, "invalid_image", f"the image data is truncated or corrupt: {exc}") from None
    original = (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height)
    return DecodedImage(rgb, original, kind)


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

    def fill_value(self) -> np.ndarray:
        """The uint8 RGB colour that a normalised 0 (a mask hole) stands for."""
        return np.clip(np.round(self.mean * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PreparedImage:
    """A decoded upload and the model input made from it."""

    decoded: DecodedImage
    resized: Image.Image  # RGB at the model's input size
    tensor: np.ndarray  # (3, H, W) float32, normalised
    seconds: float  # decode + resize + normalise time


def prepare_image(data: bytes, size: tuple[int, int], normaliser: InputNormaliser, max_pixels: int,
                  draft: bool = True) -> PreparedImage:
    """Decode, orient, convert to RGB, resize to (height, width) and normalise (blocking)."""
    start = time.perf_counter()
    height, width = size
    decoded = decode_image(data, max_pixels, (width, height) if draft else None)
    resized = resize_to_input(decoded.rgb, size)
    return PreparedImage(decoded, resized, normaliser(resized), time.perf_counter() - start)


LABEL_MODES = ("P", "L")  # label PNGs: palette or greyscale, pixel value = class id


def decode_label_map(data: bytes, max_pixels: int, num_classes: int, image_size: tuple[int, int]) -> np.ndarray:
    """A ground-truth label PNG -> (H, W) uint8 class ids (255 = void), checked against the model and the image.

    The PNG must be palette or greyscale (its pixel values, not its colours, are the class ids), as large
    as the image it annotates (``image_size`` is (width, height) after EXIF orientation), and hold only
    class ids below ``num_classes`` or 255. Raises ImageRejectedError: 400 for bytes that are not a readable
    image, 413 over ``max_pixels``, 422 for a readable file that is not a valid label map for this request.
    """
    if not data:
        raise ImageRejectedError(400, "invalid_truth", "the truth file is empty (0 bytes)")
    image = open_untrusted(data, max_pixels, "truth")
    width, height = image.size
    if image.format != "PNG" or image.mode not in LABEL_MODES:
        raise ImageRejectedError(422, "invalid_truth",
                                 f"the truth is a {image.format or 'unknown'} image in mode {image.mode}; send a "
                                 "palette (P) or greyscale (L) PNG whose pixel values are class ids (255 = void)")
    if (width, height) != tuple(image_size):
        raise ImageRejectedError(422, "invalid_truth", f"the truth is {width}x{height} but the image is "
                                 f"{image_size[0]}x{image_size[1]}; a label map must cover the image pixel for pixel")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejectedError(400, "invalid_truth", f"the truth data is truncated or corrupt: {exc}") from None
    labels = np.asarray(image, dtype=np.uint8)
    bad = np.unique(labels[(labels >= num_classes) & (labels != VOID)])
    if bad.size:
        raise ImageRejectedError(422, "invalid_truth",
                                 f"the truth holds class ids {bad[:10].tolist()}; this model has {num_classes} "
                                 f"classes (allowed: 0..{num_classes - 1}, and {VOID} for void)")
    return labels
