"""Evaluation metrics: multi-label mAP/CP/CR/CF1/OP/OR/OF1 (the MSL paper) and mIoU + IA-mIoU (the L_sb
paper); see docs/papers.md."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import ndimage

from common.labels import BACKGROUND, EIGHT_CONNECTED, SIZE_BUCKETS, VOID, size_bucket

# ---------------------------------------------------------------- multi-label classification


def _check_multilabel(scores: Any, targets: Any, ignore_zero: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, C) probabilities and {-1, 0, 1} targets; return scores and a {-1: neg, 0: ignored, 1: pos} map."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 2 or targets.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, C) arrays")
    if scores.shape[1] != targets.shape[1]:
        raise ValueError(f"scores have {scores.shape[1]} classes but targets have {targets.shape[1]}")
    if scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores have {scores.shape[0]} rows but targets have {targets.shape[0]}")
    if np.isnan(scores).any():
        raise ValueError(f"scores contain {int(np.isnan(scores).sum())} NaN values")
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise ValueError(
            f"scores range over [{scores.min():g}, {scores.max():g}]; expected probabilities in [0, 1] "
            "(apply sigmoid to logits first)"
        )
    values = set(np.unique(targets).tolist())
    if not values <= {-1, 0, 1}:
        raise ValueError(f"targets hold values {sorted(values)}; expected 1 (positive), -1 (negative), 0")
    if ignore_zero is None:
        ignore_zero = -1 in values
    if not ignore_zero and -1 in values:
        raise ValueError("targets hold -1 but ignore_zero=False; with -1 negatives, 0 must mean 'ignored'")
    labels = targets.astype(np.int8)
    if not ignore_zero:
        labels = np.where(labels == 1, 1, -1).astype(np.int8)
    return scores, labels


def _class_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one class from scores and {-1, 0, 1} labels (0 dropped); NaN if there is no positive."""
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] == 1
    n_pos = int(positive.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    tp = np.cumsum(positive)
    # Tied scores form one threshold (as in scikit-learn), so the result does not depend on input order.
    group_end = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    tp_at_end = tp[group_end]
    precision = tp_at_end / (group_end + 1)
    recall_step = np.diff(np.r_[0, tp_at_end]) / n_pos
    return float(np.sum(recall_step * precision))


def average_precision(scores: Any, targets: Any, ignore_zero: bool | None = None) -> np.ndarray:
    """Per-class non-interpolated AP in [0, 1] for (N, C) scores; NaN for a class without positives.

    Without ties this is the mean, over the positives, of the precision at each positive's rank
    (the reference evaluation); tied scores are treated as one threshold, as scikit-learn does.
    Targets use the VOC convention 1 / -1 / 0 with 0 ignored; plain 0/1 targets (0 = negative) are
    recognised by the absence of -1, or forced with `ignore_zero`.
    """
    scores, labels = _check_multilabel(scores, targets, ignore_zero)
    return np.array([_class_average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def multilabel_metrics(
    scores: Any, targets: Any, threshold: float = 0.5, ignore_zero: bool | None = None
) -> dict[str, float]:
    """mAP, CP, CR, CF1, OP, OR, OF1 in percent for (N, C) probabilities (sigmoid of logits), as the MSL
    paper's evaluation computes them.

    - A prediction is `score >= threshold`, as in the reference evaluation.
    - Entries with target 0 are ignored everywhere under the VOC convention (see `average_precision`).
    - Classes with no positive target have no defined AP or recall; they are left out of the
      class means (mAP, CP, CR) instead of counting as 0 or NaN. Their false positives still count
      in OP. If no class has a positive, ValueError.
    - CP divides by max(predicted, 1) per class. OP divides by the true total of predictions, as the metric's
      definition reads; the reference code sums the per-class counts after raising 0 to 1, which adds 1
      per silent class to OP's denominator.
    - F1 is 0 when precision and recall are both 0.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} must lie in [0, 1]")
    scores, labels = _check_multilabel(scores, targets, ignore_zero)
    ap = np.array([_class_average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])
    evaluated = ~np.isnan(ap)
    if not evaluated.any():
        raise ValueError("no class has a positive target; mAP and recall are undefined")
    predicted = (scores >= threshold) & (labels != 0)
    positive = labels == 1
    tp = (predicted & positive).sum(axis=0)
    n_pred = predicted.sum(axis=0)
    n_pos = positive.sum(axis=0)
    cp = float(np.mean(tp[evaluated] / np.maximum(n_pred[evaluated], 1)))
    cr = float(np.mean(tp[evaluated] / n_pos[evaluated]))
    op = float(tp.sum() / max(int(n_pred.sum()), 1))
    orec = float(tp.sum() / n_pos.sum())
    return {
        "mAP": 100.0 * float(ap[evaluated].mean()),
        "CP": 100.0 * cp,
        "CR": 100.0 * cr,
        "CF1": 100.0 * _f1(cp, cr),
        "OP": 100.0 * op,
        "OR": 100.0 * orec,
        "OF1": 100.0 * _f1(op, orec),
    }


THRESHOLD_GRID = tuple(round(0.01 * k, 2) for k in range(1, 100))  # 0.01 ... 0.99


def choose_threshold(scores: Any, targets: Any, criterion: str = "OF1", grid: tuple[float, ...] = THRESHOLD_GRID,
                     ignore_zero: bool | None = None) -> dict[str, Any]:
    """The decision threshold of ``grid`` that maximises ``criterion`` (OF1 or CF1) of ``multilabel_metrics``;
    of equal scores, the one nearest 0.5. Returns the threshold and the figures there and at 0.5."""
    if criterion not in ("OF1", "CF1"):
        raise ValueError(f"criterion {criterion!r}: choose OF1 or CF1")
    figures = {t: multilabel_metrics(scores, targets, threshold=t, ignore_zero=ignore_zero) for t in grid}
    best = min(grid, key=lambda t: (-figures[t][criterion], abs(t - 0.5)))
    return {"threshold": best, "criterion": criterion, "figures": figures[best],
            "at_0.5": multilabel_metrics(scores, targets, threshold=0.5, ignore_zero=ignore_zero)}


# ---------------------------------------------------------------- segmentation


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


class SegmentationMetrics:
    """Streaming mIoU and IA-mIoU (the L_sb paper): call `update` once per image, then `compute`.

    Inputs per image, all (H, W) integer arrays at the original resolution:
    - `pred`: predicted class ids in [0, num_classes), or 255 for "no prediction" (counts as a miss);
    - `gt_class`: class ids in [0, num_classes), 255 = void;
    - `gt_instance`: VOC SegmentationObject style, 0 = no instance, 255 = void, k > 0 = instance id
      (ids need not be contiguous). An instance's class is the majority non-void class under it.

    Choices where the paper leaves room (they follow the authors' evaluation code where it has one):
    - Void = 255 in either map; void pixels count nowhere: not in confusion matrices, not in |B|,
      I, O, R, not in |G_i|, not in instance areas. Blobs are found on the full predicted mask of a
      class (void pixels included, as the authors' contours do), then only non-void pixels are counted.
    - A blob touches G_i when it shares at least one non-void pixel with it.
    - O counts the blob's pixels on ground truth of the same class outside G_i (other instances).
    - An instance's area bucket uses |G_i| without void. Instances with no non-void pixel, or whose
      majority class is the background, are skipped.
    - Background (`background` class id, None for none) gets ordinary IoU per image, averaged over the
      images that contain background ground truth; it is not size-bucketed.
    - Classes with no instance (or no background image) are NaN and dropped from the means; a mean
      over nothing is NaN (e.g. IA_S when the dataset has no small instance).
    Results are fractions in [0, 1].
    """

    def __init__(self, num_classes: int, background: int | None = BACKGROUND) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= VOID:
            raise ValueError(f"num_classes={num_classes!r} must be an integer in [1, {VOID}]")
        if background is not None and not 0 <= background < num_classes:
            raise ValueError(f"background class {background} must lie in [0, {num_classes})")
        self.num_classes = num_classes
        self.background = background
        self.reset()

    def reset(self) -> None:
        """Forget every image added so far."""
        c = self.num_classes
        self.images = 0
        # Rows: ground-truth class; columns: predicted class, the last one for "no prediction" (255).
        self.confusion = np.zeros((c, c + 1), dtype=np.int64)
        self.iou_sum = {bucket: np.zeros(c) for bucket in ("all", *SIZE_BUCKETS)}
        self.iou_count = {bucket: np.zeros(c, dtype=np.int64) for bucket in ("all", *SIZE_BUCKETS)}

    def _check(self, name: str, array: Any, allow_any_positive: bool = False) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim != 2:
            raise ValueError(f"{name} has shape {array.shape}; expected a 2-D (H, W) map")
        if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} has dtype {array.dtype}; expected integer labels")
        if array.size == 0:
            return array.astype(np.int64)
        low = int(array.min())
        if low < 0:
            raise ValueError(f"{name} holds the negative label {low}; expected values >= 0")
        if not allow_any_positive:
            bad = np.unique(array[(array >= self.num_classes) & (array != VOID)])
            if bad.size:
                expected = f"[0, {self.num_classes}) or void {VOID}"
                raise ValueError(f"{name} holds labels {bad[:10].tolist()}; expected values in {expected}")
        return array.astype(np.int64, copy=False)

    def update(self, pred: Any, gt_class: Any, gt_instance: Any) -> None:
        """Add one image: predicted class map, ground-truth class map and ground-truth instance map."""
        pred = self._check("pred", pred)
        gt_class = self._check("gt_class", gt_class)
        gt_instance = self._check("gt_instance", gt_instance, allow_any_positive=True)
        if not pred.shape == gt_class.shape == gt_instance.shape:
            raise ValueError(
                f"pred {pred.shape}, gt_class {gt_class.shape} and gt_instance {gt_instance.shape} "
                "must have the same shape"
            )
        c = self.num_classes
        valid = (gt_class != VOID) & (gt_instance != VOID)
        pred_col = np.where(pred == VOID, c, pred)
        codes = gt_class[valid] * (c + 1) + pred_col[valid]
        self.confusion += np.bincount(codes, minlength=c * (c + 1)).reshape(c, c + 1)
        self.images += 1
        self._update_background(pred, gt_class, valid)
        self._update_instances(pred, gt_class, gt_instance, valid)

    def _update_background(self, pred: np.ndarray, gt_class: np.ndarray, valid: np.ndarray) -> None:
        bg = self.background
        if bg is None:
            return
        gt_bg = (gt_class == bg) & valid
        if not gt_bg.any():
            return
        pred_bg = (pred == bg) & valid
        iou = np.count_nonzero(gt_bg & pred_bg) / np.count_nonzero(gt_bg | pred_bg)
        self.iou_sum["all"][bg] += iou
        self.iou_count["all"][bg] += 1

    def _update_instances(
        self, pred: np.ndarray, gt_class: np.ndarray, gt_instance: np.ndarray, valid: np.ndarray
    ) -> None:
        c = self.num_classes
        in_instance = valid & (gt_instance != 0)
        ids, inverse = np.unique(gt_instance[in_instance], return_inverse=True)
        if ids.size == 0:
            return
        # Dense instance index per pixel: 0 = none, 1..n = instance.
        instance_index = np.zeros(gt_instance.shape, dtype=np.int64)
        instance_index[in_instance] = inverse.ravel() + 1
        votes = np.bincount(inverse.ravel() * c + gt_class[in_instance], minlength=ids.size * c)
        instance_class = votes.reshape(ids.size, c).argmax(axis=1)
        areas = np.bincount(inverse.ravel(), minlength=ids.size)
        for cls in np.unique(instance_class).tolist():
            if cls == self.background:
                continue
            members = np.flatnonzero(instance_class == cls)  # 0-based instance indices of this class
            ious = self._class_instance_ious(pred, gt_class, instance_index, valid, cls, members, areas[members])
            for iou, area in zip(ious.tolist(), areas[members].tolist(), strict=True):
                for bucket in ("all", size_bucket(area)):
                    self.iou_sum[bucket][cls] += iou
                    self.iou_count[bucket][cls] += 1

    @staticmethod
    def _class_instance_ious(
        pred: np.ndarray,
        gt_class: np.ndarray,
        instance_index: np.ndarray,
        valid: np.ndarray,
        cls: int,
        members: np.ndarray,
        gt_area: np.ndarray,
    ) -> np.ndarray:
        """IoU_i of each instance of one class in one image (the L_sb paper's blob matching, pro-rata charge)."""
        m = members.size
        blobs, n_blobs = ndimage.label(pred == cls, structure=EIGHT_CONNECTED)
        if n_blobs == 0:
            return np.zeros(m)
        # Every count below involves only non-void pixels of predicted blobs.
        pixels = np.flatnonzero((blobs > 0) & valid)
        blob = blobs.ravel()[pixels]
        local = np.zeros(instance_index.max() + 1, dtype=np.int64)
        local[members + 1] = np.arange(1, m + 1)
        inst = local[instance_index.ravel()[pixels]]  # 0 = no instance of this class, 1..m otherwise
        blob_size = np.bincount(blob, minlength=n_blobs + 1)
        blob_on_class = np.bincount(blob[gt_class.ravel()[pixels] == cls], minlength=n_blobs + 1)
        touching = inst > 0
        pairs, counts = np.unique(blob[touching] * (m + 1) + inst[touching], return_counts=True)
        blob_of_pair, inst_of_pair = np.divmod(pairs, m + 1)
        inter = counts  # I for each (blob, instance) pair that touches
        other = blob_on_class[blob_of_pair] - inter  # O: same-class ground truth outside G_i
        rest = blob_size[blob_of_pair] - blob_on_class[blob_of_pair]  # R
        charged = inter + (rest * inter) // (inter + other)  # equals |B| when O == 0
        sum_inter = np.bincount(inst_of_pair, weights=inter, minlength=m + 1)[1:]
        sum_charged = np.bincount(inst_of_pair, weights=charged, minlength=m + 1)[1:]
        return sum_inter / (sum_charged + gt_area - sum_inter)

    def compute(self) -> dict[str, Any]:
        """mIoU, IA-mIoU, IA_S, IA_M, IA_L (fractions) plus per-class arrays.

        `counts_per_class` holds the number of instances averaged per class (for the background class,
        the number of images averaged).
        """
        if self.images == 0:
            raise ValueError("SegmentationMetrics.compute() called before any update()")
        iou = iou_per_class(self.confusion)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_bucket = {
                bucket: np.where(self.iou_count[bucket] > 0, self.iou_sum[bucket] / self.iou_count[bucket], np.nan)
                for bucket in ("all", *SIZE_BUCKETS)
            }
        return {
            "mIoU": _nanmean(iou),
            "IA-mIoU": _nanmean(per_bucket["all"]),
            "IA_S": _nanmean(per_bucket["S"]),
            "IA_M": _nanmean(per_bucket["M"]),
            "IA_L": _nanmean(per_bucket["L"]),
            "IoU_per_class": iou,
            "IA_IoU_per_class": per_bucket["all"],
            "IA_S_per_class": per_bucket["S"],
            "IA_M_per_class": per_bucket["M"],
            "IA_L_per_class": per_bucket["L"],
            "counts_per_class": self.iou_count["all"].copy(),
            "images": self.images,
        }


# ---------------------------------------------------------------- one image: a prediction against a reference


def jaccard(a: set[int], b: set[int]) -> float | None:
    """|A & B| / |A | B| of two label sets; None when both are empty (there is nothing to compare)."""
    union = a | b
    return None if not union else len(a & b) / len(union)


def confusion_matrix(reference: Any, prediction: Any, num_classes: int, region: Any = None) -> np.ndarray:
    """(C, C) pixel counts, rows = reference class, columns = predicted class, for maps of any equal shape.

    Reference pixels equal to VOID (255) and pixels outside the boolean ``region`` (same shape) are left out.
    Predicted values must lie in [0, num_classes); ValueError names any reference value that does not.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} must have the same shape")
    keep = reference != VOID
    if region is not None:
        keep &= np.asarray(region, dtype=bool)
    ref, pred = reference[keep].astype(np.int64), prediction[keep].astype(np.int64)
    for name, values in (("reference", ref), ("prediction", pred)):
        bad = np.unique(values[(values < 0) | (values >= num_classes)])
        if bad.size:
            raise ValueError(f"{name} holds class ids {bad[:10].tolist()}; expected values in [0, {num_classes})")
    return np.bincount(ref * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, -1)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of every class from a (C, C + k) confusion matrix (rows: reference, columns: prediction; k extra
    columns count reference pixels predicted as something outside the C classes); NaN where the class is in
    neither map."""
    classes = confusion.shape[0]
    inter = np.diag(confusion[:, :classes]).astype(np.float64)
    union = confusion[:, :classes].sum(axis=0) + confusion.sum(axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Fraction of counted pixels whose predicted class equals the reference; NaN when none is counted."""
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else math.nan


def mean_iou(confusion: np.ndarray, classes: Any = None) -> float:
    """Mean IoU over ``classes`` (default: every class present in either map), skipping classes with no pixel.

    NaN when no listed class has a pixel in either map.
    """
    iou = iou_per_class(confusion)
    if classes is not None:
        iou = iou[np.asarray(classes, dtype=np.int64)]
    return _nanmean(iou)
