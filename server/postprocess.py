"""Model outputs -> answers: sigmoid or softmax labels for classifiers; class maps, PNGs and region statistics
for segmenters."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import expit

from robustness.labelmap import EIGHT_CONNECTED, VOC_PALETTE, size_bucket

DIGITS = 6  # scores are rounded so that JSON answers are stable and short
PNG_COMPRESSION = 3


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (no overflow warnings)."""
    return expit(np.asarray(logits, dtype=np.float64))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64, stable for any logit range (the row maximum is subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


SCORERS = {"sigmoid": sigmoid, "softmax": softmax}


def class_scores(logits: np.ndarray, activation: str) -> np.ndarray:
    """Classifier logits -> probabilities with the manifest's activation (``sigmoid`` or ``softmax``)."""
    if activation not in SCORERS:
        raise ValueError(f"activation {activation!r} must be one of {', '.join(SCORERS)}")
    return SCORERS[activation](logits)


def top_labels(scores: np.ndarray, class_names: Sequence[str], top_k: int,
               threshold: float | None = None) -> list[dict[str, Any]]:
    """``[{name, score}]`` of the ``top_k`` highest scores, highest first (ties in class order), optionally
    keeping only scores >= ``threshold``."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"name": class_names[i], "score": round(float(scores[i]), DIGITS)} for i in order
            if threshold is None or scores[i] >= threshold]


def labels_above(scores: np.ndarray, class_names: Sequence[str], threshold: float,
                 top_k: int | None = None) -> list[dict[str, Any]]:
    """``[{name, score}]`` of classes with score >= threshold, highest first, at most ``top_k``."""
    order = np.argsort(-scores, kind="stable")
    labels = [{"name": class_names[i], "score": round(float(scores[i]), DIGITS)} for i in order
              if scores[i] >= threshold]
    return labels if top_k is None else labels[:top_k]


def score_table(scores: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Every class's score, in class order."""
    return {name: round(float(s), DIGITS) for name, s in zip(class_names, scores, strict=True)}


def class_map(logits: np.ndarray) -> np.ndarray:
    """(C, H, W) pixel logits -> (H, W) uint8 class ids (argmax; softmax does not change it)."""
    if logits.shape[0] > 256:
        raise ValueError(f"{logits.shape[0]} classes do not fit a uint8 class map (at most 256)")
    return np.argmax(logits, axis=0).astype(np.uint8)


def resize_class_map(classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 class map to (width, height)."""
    if (classes.shape[1], classes.shape[0]) == size:
        return classes
    return np.asarray(Image.fromarray(classes, mode="L").resize(size, Image.NEAREST))


def palette_png(classes: np.ndarray) -> bytes:
    """A palette PNG whose pixel values are the class ids (VOC colours)."""
    image = Image.fromarray(classes, mode="L").convert("P")
    image.putpalette(VOC_PALETTE.tobytes())
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_COMPRESSION)
    return out.getvalue()


def overlay_png(rgb: Image.Image, classes: np.ndarray, alpha: float) -> bytes:
    """The class colours blended over the image with weight ``alpha``; class 0 (background) is left clear."""
    pixels = np.asarray(rgb, dtype=np.float32)
    colours = VOC_PALETTE[classes].astype(np.float32)
    weight = np.where(classes[..., None] > 0, np.float32(alpha), np.float32(0.0))
    blended = pixels * (1.0 - weight) + colours * weight
    out = io.BytesIO()
    Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8), mode="RGB").save(
        out, format="PNG", compress_level=PNG_COMPRESSION)
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
