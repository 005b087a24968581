"""Per-condition statistics kept while the images stream by, and the figures computed from them.

Only what the metrics and the bootstrap need is kept, so memory grows with the number of images only by:
- classifiers: the (N, C) sigmoid scores per condition and model;
- segmenters: each image's non-zero confusion-matrix cells and its per-class instance-IoU sums and counts
  (the instance records of SegmentationMetrics, summed per image and class), as flat sparse arrays.

A figure set is computed for a sample of the images: an index array (bootstrap resample) for classifiers,
per-image multiplicities (weights) for segmenters; the full set is ``None`` / all ones.
"""

from __future__ import annotations

import math

import numpy as np

from common.labels import BACKGROUND, SIZE_BUCKETS
from robustness.evaluation.statistics import expected_calibration_error
from robustness.metrics import SegmentationMetrics, average_precision, multilabel_metrics

CLASSIFIER_METRICS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "ECE")
SEGMENTER_METRICS = ("mIoU", "IA-mIoU", "IA_S", "IA_M", "IA_L")
CLASSIFIER_PER_CLASS = ("AP",)
SEGMENTER_PER_CLASS = ("IoU", "IA-IoU")
IOU_BUCKETS = ("all", *SIZE_BUCKETS)


def ternary_targets(labels: np.ndarray, ternary: bool) -> np.ndarray:
    """(N, C) int8 targets in the VOC convention: 1 positive, -1 negative, 0 ignored (difficult)."""
    labels = np.asarray(labels)
    if ternary:
        return labels.astype(np.int8)
    return np.where(labels > 0, 1, -1).astype(np.int8)


class ClassificationScores:
    """The sigmoid scores of every image under one condition, for one model."""

    def __init__(self, images: int, num_classes: int) -> None:
        self.scores = np.full((images, num_classes), np.nan)

    def add(self, index: int, scores: np.ndarray) -> None:
        """Store image ``index``'s (C,) scores."""
        self.scores[index] = scores


def classification_figures(scores: np.ndarray, targets: np.ndarray, threshold: float,
                           sample: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The 7 multi-label metrics and ECE (percent), and per-class AP (percent), on a sample of the images.

    Metrics that a sample leaves undefined (no positive at all) are NaN.
    """
    if sample is not None:
        scores, targets = scores[sample], targets[sample]
    try:
        metrics = multilabel_metrics(scores, targets, threshold, ignore_zero=True)
    except ValueError:
        metrics = {name: math.nan for name in CLASSIFIER_METRICS[:-1]}
    decided = targets != 0
    metrics["ECE"] = 100.0 * expected_calibration_error(scores[decided], targets[decided] == 1)
    return metrics, {"AP": 100.0 * average_precision(scores, targets, ignore_zero=True)}


class SegmentationRecords:
    """Per-image confusion cells and instance-IoU sums of one condition, for one model (sparse, flat)."""

    def __init__(self, num_classes: int, background: int | None = BACKGROUND) -> None:
        self.num_classes, self.background = num_classes, background
        self._confusion: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._instances: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.images = 0
        self._flat: dict[str, np.ndarray] | None = None

    def add(self, index: int, pred: np.ndarray, gt_class: np.ndarray, gt_instance: np.ndarray) -> None:
        """Score one image's predicted class map (at the ground truth's resolution)."""
        metrics = SegmentationMetrics(self.num_classes, self.background)
        metrics.update(pred, gt_class, gt_instance)
        cells = np.flatnonzero(metrics.confusion)
        self._confusion.append((index, cells, metrics.confusion.ravel()[cells]))
        for b, bucket in enumerate(IOU_BUCKETS):
            classes = np.flatnonzero(metrics.iou_count[bucket])
            if classes.size:
                self._instances.append((index, np.full(classes.size, b), classes,
                                        metrics.iou_sum[bucket][classes], metrics.iou_count[bucket][classes]))
        self.images += 1
        self._flat = None

    def _arrays(self) -> dict[str, np.ndarray]:
        """The per-image records concatenated into flat columns (cached until the next ``add``)."""
        if self._flat is None:
            conf, inst = self._confusion, self._instances
            columns = {
                "cell_image": [np.full(cells.size, i) for i, cells, _ in conf],
                "cell": [cells for _, cells, _ in conf],
                "cell_count": [counts for _, _, counts in conf],
                "iou_image": [np.full(classes.size, i) for i, _, classes, _, _ in inst],
                "iou_bucket": [bucket for _, bucket, _, _, _ in inst],
                "iou_class": [classes for _, _, classes, _, _ in inst],
                "iou_sum": [sums for *_, sums, _ in inst],
                "iou_count": [counts for *_, counts in inst],
            }
            self._flat = {name: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
                          for name, parts in columns.items()}
        return self._flat

    def metrics_for(self, weights: np.ndarray) -> SegmentationMetrics:
        """A SegmentationMetrics holding the sum of every image's statistics times its weight (multiplicity)."""
        c = self.num_classes
        flat = self._arrays()
        metrics = SegmentationMetrics(c, self.background)
        cell_weight = weights[flat["cell_image"]] * flat["cell_count"]
        metrics.confusion = np.rint(np.bincount(flat["cell"], cell_weight, c * (c + 1))).astype(np.int64).reshape(
            c, c + 1)
        image_weight = weights[flat["iou_image"]]
        for b, bucket in enumerate(IOU_BUCKETS):
            rows = flat["iou_bucket"] == b
            cls, w = flat["iou_class"][rows], image_weight[rows]
            metrics.iou_sum[bucket] = np.bincount(cls, w * flat["iou_sum"][rows], c)
            metrics.iou_count[bucket] = np.rint(np.bincount(cls, w * flat["iou_count"][rows], c)).astype(np.int64)
        metrics.images = int(np.sum(weights))
        return metrics


def segmentation_figures(records: SegmentationRecords,
                         weights: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """mIoU, IA-mIoU, IA_S/M/L and per-class IoU / IA-IoU (percent) on a weighted sample of the images."""
    if weights is None:
        weights = np.ones(records.images)
    result = records.metrics_for(np.asarray(weights, dtype=np.float64)).compute()
    metrics = {name: 100.0 * result[name] for name in SEGMENTER_METRICS}
    return metrics, {"IoU": 100.0 * result["IoU_per_class"], "IA-IoU": 100.0 * result["IA_IoU_per_class"]}
