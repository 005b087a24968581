"""What occlusion does to a model's answer: masked predictions compared with the clean one."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from robustness.metrics import multilabel_metrics
from server.postprocess import DIGITS, labels_above, score_table


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), DIGITS)


def jaccard(a: set[int], b: set[int]) -> float:
    """|A & B| / |A | B|, with two empty sets counting as identical (1.0)."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def ratio_summary(hole_ratios: np.ndarray) -> dict[str, float | None]:
    """Mean, min and max measured hole ratio."""
    return {"mean": _round(hole_ratios.mean()), "min": _round(hole_ratios.min()), "max": _round(hole_ratios.max())}


def classification_robustness(clean: np.ndarray, masked: np.ndarray, class_names: Sequence[str], threshold: float,
                              hole_ratios: np.ndarray, truth: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare sigmoid scores of n masked copies (n, C) with the clean scores (C,).

    - retention: per clean-positive class, the fraction of masks under which it stays positive;
    - mean_score_drop: mean of (clean - masked) over masks and all classes; ``_positive`` over clean-positive ones;
    - jaccard: mean label-set Jaccard of each masked answer against the clean one;
    - flips: number of (mask, class) decisions that differ from the clean decision;
    - metrics (with ground-truth ``truth`` names): mAP, CP, CR, CF1, OP, OR, OF1 on the masked set.
    """
    clean_pos = clean >= threshold
    masked_pos = masked >= threshold
    clean_set = set(np.flatnonzero(clean_pos).tolist())
    drops = clean[None, :] - masked
    per_mask, jaccards = [], []
    for i in range(len(masked)):
        labels = set(np.flatnonzero(masked_pos[i]).tolist())
        jaccards.append(jaccard(clean_set, labels))
        per_mask.append({
            "index": i,
            "hole_ratio": _round(hole_ratios[i]),
            "labels": [class_names[c] for c in sorted(labels)],
            "jaccard": _round(jaccards[-1]),
            "flips": int(np.count_nonzero(masked_pos[i] != clean_pos)),
            "score_drop": _round(drops[i].mean()),
        })
    report: dict[str, Any] = {
        "clean": {"labels": labels_above(clean, class_names, threshold), "scores": score_table(clean, class_names)},
        "hole_ratio": ratio_summary(hole_ratios),
        "retention": {class_names[c]: _round(masked_pos[:, c].mean()) for c in sorted(clean_set)},
        "mean_score_drop": _round(drops.mean()),
        "mean_score_drop_positive": _round(drops[:, clean_pos].mean()) if clean_set else None,
        "jaccard": _round(np.mean(jaccards)),
        "flips": int(sum(m["flips"] for m in per_mask)),
        "masks": per_mask,
    }
    if truth is not None:
        targets = np.zeros_like(masked, dtype=np.int8)
        targets[:, [class_names.index(name) for name in truth]] = 1
        scores = multilabel_metrics(masked, targets, threshold)
        report["metrics"] = {key: _round(value) for key, value in scores.items()}
    return report


def region_miou(reference: np.ndarray, prediction: np.ndarray, region: np.ndarray, num_classes: int) -> float | None:
    """mIoU of ``prediction`` against ``reference`` over the pixels in ``region`` (any leading shape).

    Classes absent from both inside the region are left out; None when the region is empty.
    """
    ref, pred = reference[region].astype(np.int64), prediction[region].astype(np.int64)
    if ref.size == 0:
        return None
    confusion = np.bincount(ref * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, -1)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def segmentation_robustness(clean: np.ndarray, masked: np.ndarray, holes: np.ndarray, class_names: Sequence[str],
                            hole_ratios: np.ndarray) -> dict[str, Any]:
    """mIoU of n masked class maps (n, H, W) against the clean map (H, W), inside and outside the holes.

    The pooled figures count every mask's pixels together; per-mask figures are listed in ``masks``.
    ``clean`` lists the area fraction of each class in the clean map (at the model's input size).
    """
    num_classes = len(class_names)
    areas = np.bincount(clean.ravel(), minlength=num_classes) / clean.size
    reference = np.broadcast_to(clean, masked.shape)
    per_mask = [{
        "index": i,
        "hole_ratio": _round(hole_ratios[i]),
        "miou_inside": _round(region_miou(clean, masked[i], holes[i], num_classes)),
        "miou_outside": _round(region_miou(clean, masked[i], ~holes[i], num_classes)),
        "changed_pixels": int(np.count_nonzero(masked[i] != clean)),
    } for i in range(len(masked))]
    return {
        "clean": {"classes": [{"id": c, "name": class_names[c], "fraction": _round(areas[c])}
                              for c in np.flatnonzero(areas).tolist()]},
        "hole_ratio": ratio_summary(hole_ratios),
        "miou": {
            "inside_holes": _round(region_miou(reference, masked, holes, num_classes)),
            "outside_holes": _round(region_miou(reference, masked, ~holes, num_classes)),
            "all": _round(region_miou(reference, masked, np.ones_like(holes), num_classes)),
        },
        "masks": per_mask,
    }


def masked_pngs(resized: Image.Image, holes: np.ndarray, fill: np.ndarray) -> list[str]:
    """Each masked copy as the model sees it (holes in the colour of a normalised 0), base64 PNG."""
    pixels = np.asarray(resized)
    out = []
    for hole in holes:
        image = np.where(hole[..., None], fill[None, None, :], pixels).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=3)
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out
