"""RISE saliency (Petsiuk et al. 2018) from the masked copies a robustness run already scored (torch-free).

For n masked copies with keep masks M_i (1 = pixel kept, i.e. 1 - hole) and class scores s_ic, the heatmap of
class c is ``sum_i s_ic M_i / sum_i M_i`` per pixel: the mean score of the copies in which that pixel was
visible. RISE normalises by the expected keep rate E[M] (a constant for its i.i.d. masks); the irregular masks
here are not uniform over the image, so each pixel is normalised by how often it was actually kept. A pixel
that no mask kept has no evidence and gets NaN: ``heatmap_peak`` skips it and ``saliency_overlay`` leaves it
uncoloured.

With few masks the map is coarse (RISE uses thousands); a robustness request reuses its n <= 64 masks, so the
saliency costs no extra inference and is an approximation to be read as such. On a synthetic scene whose score
is the visible share of one box (64x64), the peak fell inside the box for 24 of 40 mask seeds with 16 masks at
b3, 39 of 40 with 32 and 64 masks; with the trained demo classifier on 40 detected one-object scenes, for 29 (32
masks, b3) and 35 (64 masks, b3) of them.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from common.kinds import Activation, Task
from common.labels import BACKGROUND
from common.scores import DIGITS, class_map, class_scores

COLORMAP = "jet"
OVERLAY_ALPHA = 0.5  # weight of the heatmap colour over the image
MIN_SALIENCY_MASKS = 8  # fewer masks give a map that is mostly the outline of single masks


def rise_saliency(keep_masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-class RISE heatmaps (C, H, W) float32 from keep masks (n, H, W) in {0, 1} and scores (n, C)."""
    keep = np.asarray(keep_masks)
    scores = np.asarray(scores, dtype=np.float32)
    if keep.ndim != 3 or scores.ndim != 2 or len(keep) != len(scores) or not len(keep):
        raise ValueError(f"keep masks {keep.shape} must be (n, H, W) and scores {scores.shape} (n, C), n >= 1")
    n, height, width = keep.shape
    flat = keep.reshape(n, -1)
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    elif not ((flat == 0) | (flat == 1)).all():
        raise ValueError("keep masks must hold only 0 and 1 (1 = pixel kept)")
    kept = flat.sum(axis=0, dtype=np.float32)  # counts up to n: exact in float32
    # numpy's own einsum loops, not a BLAS matmul: OpenBLAS threads would spin on the cores inference needs.
    weighted = np.einsum("nc,np->cp", scores, flat.astype(np.float32), optimize=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        heat = weighted / kept  # 0 / 0 = NaN where no mask kept the pixel
    return heat.reshape(len(scores.T), height, width)


def heatmap_peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(y, x) of the heatmap's maximum, NaN skipped; ties go to the first in row-major order."""
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2 or not np.isfinite(heatmap).any():
        raise ValueError(f"a heatmap of shape {heatmap.shape} with no finite value has no peak")
    flat = np.where(np.isfinite(heatmap), heatmap, -np.inf).ravel()
    y, x = divmod(int(np.argmax(flat)), heatmap.shape[1])
    return y, x


@functools.cache
def _colour_table() -> np.ndarray:
    """The colormap as 256 uint8 RGB rows (matplotlib imported only when a first overlay is drawn)."""
    from matplotlib import colormaps

    return np.round(colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def saliency_overlay(image: np.ndarray, heatmap: np.ndarray) -> bytes:
    """A PNG of the uint8 (H, W, 3) image blended with the min-max-normalised, colormapped (H, W) heatmap.

    A constant heatmap is drawn in the colormap's lowest colour; NaN pixels are left as the image.
    """
    image, heatmap = np.asarray(image), np.asarray(heatmap, dtype=np.float32)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or heatmap.shape != image.shape[:2]:
        raise ValueError(f"expected a uint8 (H, W, 3) image and an (H, W) heatmap, got {image.dtype} "
                         f"{image.shape} and {heatmap.shape}")
    finite = np.isfinite(heatmap)
    values = heatmap[finite]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    scale = 255.0 / (high - low) if high > low else 0.0
    levels = np.rint(np.where(finite, heatmap - low, 0.0) * scale).astype(np.uint8)
    weight = round(OVERLAY_ALPHA * 256)  # blend in 8-bit fixed point: (image * (256 - w) + colour * w) / 256
    blended = ((image.astype(np.uint16) * (256 - weight) + _colour_table()[levels] * np.uint16(weight) + 128)
               >> 8).astype(np.uint8)
    return rgb_png(np.where(finite[..., None], blended, image))


def rgb_png(pixels: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) array as an RGB PNG (Pillow, fastest deflate level: overlays are drawn per request)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def kept_class_fraction(clean: np.ndarray, masked: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """(n, len(classes)): the share of each class's clean-map pixels that keep that class in each masked map."""
    out = np.zeros((len(masked), len(classes)), dtype=np.float64)
    for j, c in enumerate(classes):
        region = clean == c
        area = int(np.count_nonzero(region))
        if area:
            out[:, j] = np.count_nonzero(masked[:, region] == c, axis=1) / area
    return out


def explained_classes(task: str, activation: str, report: dict[str, Any], class_names: Sequence[str]) -> list[int]:
    """The class ids a report judges: sigmoid ``reference`` classes, the softmax reference class, or the
    foreground classes of a segmenter's clean map."""
    if task == Task.SEGMENTATION:
        return [entry["id"] for entry in report["clean"]["classes"] if entry["id"] != BACKGROUND]
    if activation == Activation.SOFTMAX:
        return [class_names.index(report["reference"]["class"])]
    return [class_names.index(name) for name in report["reference"]["classes"]]


def saliency_entries(task: str, activation: str, class_names: Sequence[str], outputs: np.ndarray, holes: np.ndarray,
                     classes: Sequence[int], image: np.ndarray) -> list[dict[str, Any]]:
    """One entry per class: label, clean score, heatmap peak and a base64 overlay PNG on ``image`` (H, W, 3).

    ``outputs`` are the model's outputs on the clean input followed by the n copies masked with ``holes``. A
    classifier's per-copy score is its sigmoid or softmax probability and ``score`` the clean one; a segmenter's
    per-copy score is the share of the class's clean-map pixels that keep the class, and ``score`` the share of
    the clean map the class covers.
    """
    if not classes:
        return []
    if task == Task.SEGMENTATION:
        maps = np.stack([class_map(o) for o in outputs])
        per_copy = kept_class_fraction(maps[0], maps[1:], classes)
        clean = [np.count_nonzero(maps[0] == c) / maps[0].size for c in classes]
    else:
        scores = class_scores(outputs, activation)[:, list(classes)]
        per_copy, clean = scores[1:], scores[0].tolist()
    heatmaps = rise_saliency(~np.asarray(holes, dtype=bool), per_copy)
    entries = []
    for c, score, heatmap in zip(classes, clean, heatmaps, strict=True):
        y, x = heatmap_peak(heatmap)
        entries.append({"label": class_names[c], "score": round(float(score), DIGITS), "peak": {"x": x, "y": y},
                        "png_base64": base64.b64encode(saliency_overlay(image, heatmap)).decode("ascii")})
    return entries
