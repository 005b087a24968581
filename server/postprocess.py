"""Segmenter answers: palette PNGs, overlays and region statistics of class maps."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from common.labels import EIGHT_CONNECTED, VOC_PALETTE, size_bucket
from common.scores import DIGITS
from server.images import tiles

PNG_COMPRESSION = 3


def palette_png(classes: np.ndarray) -> bytes:
    """A palette PNG whose pixel values are the class ids (VOC colours)."""
    image = Image.fromarray(classes, mode="L").convert("P")
    image.putpalette(VOC_PALETTE.tobytes())
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_COMPRESSION)
    return out.getvalue()


def overlay_png(rgb: Image.Image, classes: np.ndarray, alpha: float) -> bytes:
    """The class colours blended over the image with weight ``alpha``; class 0 (background) is left clear.

    Blends tile by tile into ``rgb`` itself (which it changes), in float32 as before: blending the whole image
    at once held about 60 B a pixel; this holds the image, the class map and the PNG (``costs.RENDER_BYTES``).
    """
    for box in tiles(rgb.size):
        left, top, right, bottom = box
        part = classes[top:bottom, left:right]
        if not part.any():  # background only: nothing to blend
            continue
        pixels = np.asarray(rgb.crop(box), dtype=np.float32)
        colours = VOC_PALETTE[part].astype(np.float32)
        weight = np.where(part[..., None] > 0, np.float32(alpha), np.float32(0.0))
        blended = pixels * (1.0 - weight) + colours * weight
        rgb.paste(Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8), mode="RGB"), (left, top))
    out = io.BytesIO()
    rgb.save(out, format="PNG", compress_level=PNG_COMPRESSION)
    return out.getvalue()


def region_statistics(classes: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per class present: pixel area, area fraction and 8-connected instances counted by S/M/L size."""
    counts = np.bincount(classes.ravel(), minlength=len(class_names))
    total = classes.size
    out = []
    for cls in np.flatnonzero(counts).tolist():
        blobs, n_blobs = ndimage.label(classes == cls, structure=EIGHT_CONNECTED)
        areas = np.bincount(blobs.ravel(), minlength=n_blobs + 1)[1:]
        buckets = {"S": 0, "M": 0, "L": 0}
        for area in areas.tolist():
            buckets[size_bucket(area)] += 1
        name = class_names[cls] if cls < len(class_names) else f"class_{cls}"
        out.append({"id": cls, "name": name, "pixels": int(counts[cls]),
                    "fraction": round(float(counts[cls]) / total, DIGITS),
                    "instances": {"count": int(n_blobs), **buckets}})
    return out


def masked_pngs(resized: Image.Image, holes: np.ndarray, fill: np.ndarray) -> list[str]:
    """Each masked copy as the model sees it (holes in the colour of a normalised 0), base64 PNG."""
    pixels = np.asarray(resized)
    out = []
    for hole in holes:
        image = np.where(hole[..., None], fill[None, None, :], pixels).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESSION)
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out
