"""What occlusion does to one image's answer: masked predictions compared with the clean one (and the truth).

This is the domain logic of the server's ``/robustness``: the true classes a request names, the clean input
followed by its masked copies, and the report built from the model's outputs.

Every figure here describes one image under n masks. Dataset-level metrics (mAP, CP/CR/CF1, OP/OR/OF1,
mIoU over a test set) need many images and belong to offline evaluation (``robustness.metrics``); computed
over n masked copies of one image sharing one target they are degenerate (mAP is always 100), so they are
not reported here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from common.kinds import Activation, Task
from common.labels import BACKGROUND, VOID
from common.preprocess import InputNormaliser
from common.scores import DIGITS, class_map, class_scores, score_table, top_labels
from robustness.corruptions import corrupt
from robustness.masks import RatioRange, cached_masks
from robustness.metrics import confusion_matrix, iou_per_class, jaccard, mean_iou, pixel_accuracy

SOFTMAX_CLEAN_TOP_K = 5
NOTHING_PREDICTED = ("the model predicts no class on the clean image (no score >= the threshold); there is "
                     "nothing whose robustness can be measured. Send the true classes as labels= to judge them.")
ONLY_BACKGROUND = ("the model predicts only background on the clean image; there is no foreground class whose "
                   "robustness can be measured (send the ground truth as a 'truth' PNG to judge the answer)")


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), DIGITS)


def _mean(values: Iterable[float | None]) -> float | None:
    """Rounded mean of the values that are defined; None when none is."""
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return _round(float(np.mean(kept))) if kept else None


def ratio_summary(hole_ratios: np.ndarray) -> dict[str, float | None]:
    """Mean, min and max measured hole ratio."""
    return {"mean": _round(hole_ratios.mean()), "min": _round(hole_ratios.min()), "max": _round(hole_ratios.max())}


# ---------------------------------------------------------------- multi-label (sigmoid) classifiers


def classification_robustness(clean: np.ndarray, masked: np.ndarray, class_names: Sequence[str], threshold: float,
                              hole_ratios: np.ndarray, truth: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare sigmoid scores of n masked copies (n, C) with the clean scores (C,).

    The classes judged (``reference``) are the true ``truth`` names when given, else the classes the model
    predicts on the clean image. Per reference class: ``retention`` (the fraction of masks under which it
    stays >= threshold) and the mean score drop (``score_drop_present``). Apart from them, the classes
    outside the reference: ``false_positives`` counts those that become positive under a mask (below the
    threshold on the clean image, at or above it masked), and the mean signed score change on them.
    ``jaccard`` of each masked label set against the clean one is descriptive; two empty sets give null.
    """
    num_classes = len(class_names)
    clean_pos, masked_pos = clean >= threshold, masked >= threshold
    clean_set = set(np.flatnonzero(clean_pos).tolist())
    if truth is not None:
        source, ref_ids = "labels", sorted(class_names.index(name) for name in truth)
    else:
        source, ref_ids = "clean_prediction", sorted(clean_set)
    reference = np.zeros(num_classes, dtype=bool)
    reference[ref_ids] = True
    absent = ~reference
    drops = clean[None, :] - masked  # (n, C)
    gained = masked_pos & ~clean_pos[None, :] & absent[None, :]  # (n, C) false positives a mask creates

    per_mask = []
    for i in range(len(masked)):
        labels = set(np.flatnonzero(masked_pos[i]).tolist())
        per_mask.append({
            "index": i,
            "hole_ratio": _round(hole_ratios[i]),
            "labels": [class_names[c] for c in sorted(labels)],
            "lost": [class_names[c] for c in ref_ids if not masked_pos[i, c]],
            "gained": [class_names[c] for c in np.flatnonzero(gained[i]).tolist()],
            "flips": int(np.count_nonzero(masked_pos[i] != clean_pos)),
            "jaccard": _round(jaccard(clean_set, labels)),
            "score_drop_present": _round(drops[i, reference].mean()) if ref_ids else None,
        })

    gained_counts = gained.sum(axis=0)
    gained_order = sorted(np.flatnonzero(gained_counts).tolist(), key=lambda c: (-gained_counts[c], c))
    report: dict[str, Any] = {
        "clean": {"labels": top_labels(clean, class_names, threshold=threshold),
                  "scores": score_table(clean, class_names)},
        "reference": {"source": source, "classes": [class_names[c] for c in ref_ids]},
        "warning": NOTHING_PREDICTED if not ref_ids else None,
        "hole_ratio": ratio_summary(hole_ratios),
        "retention": {class_names[c]: _round(masked_pos[:, c].mean()) for c in ref_ids} if ref_ids else None,
        "mean_retention": _round(masked_pos[:, reference].mean()) if ref_ids else None,
        "score_drop_present": {
            "mean": _round(drops[:, reference].mean()) if ref_ids else None,
            "per_class": {class_names[c]: _round(drops[:, c].mean()) for c in ref_ids},
        },
        "false_positives": {
            "mean_per_mask": _round(gained.sum(axis=1).mean()),
            "gained": {class_names[c]: int(gained_counts[c]) for c in gained_order},
            "mean_score_rise_absent": _round(-drops[:, absent].mean()) if absent.any() else None,
        },
        "jaccard": _mean(m["jaccard"] for m in per_mask),
        "flips": int(sum(m["flips"] for m in per_mask)),
    }
    if truth is not None:
        report["clean_correctness"] = {
            "hits": [class_names[c] for c in ref_ids if clean_pos[c]],
            "misses": [class_names[c] for c in ref_ids if not clean_pos[c]],
            "false_positives": [class_names[c] for c in sorted(clean_set) if not reference[c]],
        }
    report["masks"] = per_mask
    return report


# ---------------------------------------------------------------- single-label (softmax) classifiers


def _named(scores: np.ndarray, class_names: Sequence[str], index: int) -> dict[str, Any]:
    return {"name": class_names[index], "score": _round(scores[index])}


def softmax_robustness(clean: np.ndarray, masked: np.ndarray, class_names: Sequence[str], hole_ratios: np.ndarray,
                       truth: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare softmax probabilities of n masked copies (n, C) with the clean ones (C,).

    The reference class is the one ``truth`` name when given, else the clean top-1. ``top1_retention`` is
    the fraction of masks whose top-1 is the reference class; ``true_class_score_drop`` the drop of its
    probability (clean - masked), as a mean and per mask.
    """
    clean_top = int(np.argmax(clean))
    masked_top = np.argmax(masked, axis=1)
    if truth is not None:
        source, ref = "labels", class_names.index(truth[0])
    else:
        source, ref = "clean_prediction", clean_top
    drops = clean[ref] - masked[:, ref]
    per_mask = [{
        "index": i,
        "hole_ratio": _round(hole_ratios[i]),
        "top1": _named(masked[i], class_names, int(masked_top[i])),
        "true_class_score": _round(masked[i, ref]),
        "true_class_score_drop": _round(drops[i]),
    } for i in range(len(masked))]
    report: dict[str, Any] = {
        "clean": {"top1": _named(clean, class_names, clean_top),
                  "labels": top_labels(clean, class_names, SOFTMAX_CLEAN_TOP_K)},
        "reference": {"source": source, "class": class_names[ref], "score": _round(clean[ref])},
        "warning": None,
        "hole_ratio": ratio_summary(hole_ratios),
        "top1_retention": _round(np.mean(masked_top == ref)),
        "true_class_score_drop": {"mean": _round(drops.mean()), "per_mask": [_round(d) for d in drops]},
        "top1_changes": int(np.count_nonzero(masked_top != clean_top)),
    }
    if truth is not None:
        rank = int(np.count_nonzero(clean > clean[ref])) + 1
        report["clean_correctness"] = {"correct": clean_top == ref, "true_class_rank": rank}
    report["masks"] = per_mask
    return report


# ---------------------------------------------------------------- segmenters


def _class_ious(confusion: np.ndarray, classes: Iterable[int], class_names: Sequence[str]) -> dict[str, float | None]:
    iou = iou_per_class(confusion)
    return {class_names[c]: _round(iou[c]) for c in classes}


def _foreground_miou(confusion: np.ndarray, foreground: list[int]) -> float | None:
    return _round(mean_iou(confusion, foreground)) if foreground else None


def truth_figures(truth: np.ndarray, clean: np.ndarray, masked: np.ndarray,
                  class_names: Sequence[str]) -> dict[str, Any]:
    """Pixel accuracy, mIoU and per-class IoU of the clean map and (mean over masks) of the masked maps against
    a ground-truth class map (same shape, 255 = void). mIoU averages the classes present in the truth or the
    prediction, background included."""
    num_classes = len(class_names)
    clean_conf = confusion_matrix(truth, clean, num_classes)
    mask_confs = [confusion_matrix(truth, m, num_classes) for m in masked]
    clean_iou = iou_per_class(clean_conf)
    mask_ious = np.stack([iou_per_class(c) for c in mask_confs]) if mask_confs else np.empty((0, num_classes))
    seen = [c for c in range(num_classes) if np.isfinite(clean_iou[c]) or np.isfinite(mask_ious[:, c]).any()]
    clean_miou = _round(mean_iou(clean_conf))
    masked_miou = _mean(mean_iou(c) for c in mask_confs)
    return {
        "void_fraction": _round(np.mean(truth == VOID)),
        "clean": {"pixel_accuracy": _round(pixel_accuracy(clean_conf)), "miou": clean_miou,
                  "per_class_iou": {class_names[c]: _round(clean_iou[c]) for c in seen}},
        "masked": {"pixel_accuracy": _mean(pixel_accuracy(c) for c in mask_confs), "miou": masked_miou,
                   "per_class_iou": {class_names[c]: _mean(mask_ious[:, c].tolist()) for c in seen}},
        "miou_drop": None if clean_miou is None or masked_miou is None else _round(clean_miou - masked_miou),
    }


def segmentation_robustness(clean: np.ndarray, masked: np.ndarray, holes: np.ndarray, class_names: Sequence[str],
                            hole_ratios: np.ndarray, truth: np.ndarray | None = None) -> dict[str, Any]:
    """Agreement of n masked class maps (n, H, W) with the clean map (H, W), not dominated by background.

    ``per_class_iou``: IoU of each class present in the clean map, masked vs clean, pooled over all masks.
    ``miou_foreground``: their mean without the background (null, with a warning, when the clean map is all
    background). ``inside_holes`` / ``outside_holes``: the same mean over hole / kept pixels only, and the
    plain pixel agreement there. With ``truth`` (H, W; 255 = void), accuracy against the ground truth too.
    """
    num_classes = len(class_names)
    areas = np.bincount(clean.ravel(), minlength=num_classes)
    present = np.flatnonzero(areas).tolist()
    foreground = [c for c in present if c != BACKGROUND]
    reference = np.broadcast_to(clean, masked.shape)
    pooled = {
        "all": confusion_matrix(reference, masked, num_classes),
        "inside_holes": confusion_matrix(reference, masked, num_classes, holes),
        "outside_holes": confusion_matrix(reference, masked, num_classes, ~holes),
    }
    per_mask = []
    for i in range(len(masked)):
        whole = confusion_matrix(clean, masked[i], num_classes)
        inside = confusion_matrix(clean, masked[i], num_classes, holes[i])
        outside = confusion_matrix(clean, masked[i], num_classes, ~holes[i])
        entry: dict[str, Any] = {
            "index": i,
            "hole_ratio": _round(hole_ratios[i]),
            "miou_foreground": _foreground_miou(whole, foreground),
            "miou_foreground_inside": _foreground_miou(inside, foreground),
            "miou_foreground_outside": _foreground_miou(outside, foreground),
            "changed_pixels": int(np.count_nonzero(masked[i] != clean)),
        }
        if truth is not None:
            conf = confusion_matrix(truth, masked[i], num_classes)
            entry["truth"] = {"pixel_accuracy": _round(pixel_accuracy(conf)), "miou": _round(mean_iou(conf))}
        per_mask.append(entry)
    report: dict[str, Any] = {
        "clean": {"classes": [{"id": c, "name": class_names[c], "fraction": _round(areas[c] / clean.size)}
                              for c in present]},
        "warning": None if foreground else ONLY_BACKGROUND,
        "hole_ratio": ratio_summary(hole_ratios),
        "per_class_iou": _class_ious(pooled["all"], present, class_names),
        "miou_foreground": _foreground_miou(pooled["all"], foreground),
        **{region: {"miou_foreground": _foreground_miou(pooled[region], foreground),
                    "pixel_agreement": _round(pixel_accuracy(pooled[region]))}
           for region in ("inside_holes", "outside_holes")},
    }
    if truth is not None:
        report["truth"] = truth_figures(truth, clean, masked, class_names)
    report["masks"] = per_mask
    return report


# ---------------------------------------------------------------- one request, end to end


class LabelsNotSupportedError(ValueError):
    """``labels=`` sent for a model that is not a classifier."""


def reference_labels(labels: str | None, class_names: Sequence[str], task: str,
                     activation: str = Activation.SIGMOID) -> list[str] | None:
    """The true class names of ``labels=a,b`` (None when not given); ValueError names what is wrong.

    Only classifiers take names, and a single-label (softmax) classifier exactly one.
    """
    if labels is None:
        return None
    if task != Task.CLASSIFICATION:
        raise LabelsNotSupportedError("labels= (ground truth) applies to classification models only; send a "
                                      "segmenter's ground truth as a multipart 'truth' PNG")
    names = [name.strip() for name in labels.split(",") if name.strip()]
    unknown = [name for name in names if name not in class_names]
    if not names or unknown:
        given = ", ".join(unknown) if unknown else "nothing"
        raise ValueError(f"labels: {given} is not a class of this model (allowed: {', '.join(class_names)})")
    names = list(dict.fromkeys(names))
    if activation == Activation.SOFTMAX and len(names) > 1:
        raise ValueError(f"labels: {', '.join(names)} are {len(names)} classes; this model is a single-label "
                         "(softmax) classifier, so give exactly one true class")
    return names


def occluded_batch(clean: np.ndarray, ratio: RatioRange, n: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean (3, H, W) input followed by n masked copies, (n + 1, 3, H, W), and the (n, H, W) hole masks.

    The masks come from ``cached_masks`` (read-only; they do not depend on the image) and each copy is
    written straight into the batch: ``apply_mask``'s clean * (1 - hole), bit for bit, without the copies.
    """
    height, width = clean.shape[1:]
    holes = cached_masks(n, height, width, ratio, seed)
    batch = np.empty((n + 1, *clean.shape), dtype=np.result_type(clean.dtype, np.float32))
    batch[0] = clean
    np.multiply(clean, ~holes[:, None], out=batch[1:])
    return batch, holes


class CorruptionTimeoutError(TimeoutError):
    """The corrupted copies were not done by the request's deadline; the rest were not made."""


def corrupted_batch(clean: np.ndarray, image: np.ndarray, normaliser: InputNormaliser, name: str, severity: int,
                    n: int, seed: int, ratio: RatioRange | None = None,
                    deadline: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clean (3, H, W) input followed by n copies of ``image`` (the uint8 (H, W, 3) picture ``clean`` was made
    from) corrupted with seeds seed..seed+n-1 and normalised, with the seeded masks of ``ratio`` on top when given.

    Returns the (n + 1, 3, H, W) batch, the (n, H, W) holes (all False without ``ratio``) and the corrupted uint8
    copies (before masking). Some corruptions take a few hundred ms per copy, so the work stops with
    CorruptionTimeoutError once ``deadline`` (a ``time.monotonic()`` instant) has passed.
    """
    height, width = clean.shape[1:]
    copies = np.empty((n, height, width, 3), dtype=np.uint8)
    batch = np.empty((n + 1, 3, height, width), dtype=np.float32)
    batch[0] = clean
    for i in range(n):
        if deadline is not None and time.monotonic() > deadline:
            raise CorruptionTimeoutError(f"{i} of {n} {name} copies were made before the deadline")
        copies[i] = corrupt(image, name, severity, seed + i)
        batch[i + 1] = normaliser(Image.fromarray(copies[i], mode="RGB"))
    if ratio is None:
        return batch, np.zeros((n, height, width), dtype=bool), copies
    holes = cached_masks(n, height, width, ratio, seed)
    batch[1:] *= ~holes[:, None]
    return batch, holes, copies


def occlusion_report(task: str, activation: str, class_names: Sequence[str], outputs: np.ndarray,
                     holes: np.ndarray, labels: Sequence[str] | None = None, threshold: float | None = None,
                     truth_map: np.ndarray | None = None) -> dict[str, Any]:
    """The report for the outputs of ``occluded_batch``'s batch (clean first), by the model's task and activation."""
    ratios = holes.reshape(len(holes), -1).mean(axis=1)
    if task == Task.CLASSIFICATION:
        scores = class_scores(outputs, activation)
        if activation == Activation.SOFTMAX:
            return softmax_robustness(scores[0], scores[1:], class_names, ratios, labels)
        if threshold is None:
            raise ValueError("a multi-label (sigmoid) classifier's report needs its decision threshold")
        return classification_robustness(scores[0], scores[1:], class_names, threshold, ratios, labels)
    maps = np.stack([class_map(o) for o in outputs])
    return segmentation_robustness(maps[0], maps[1:], holes, class_names, ratios, truth_map)
