"""A classifier's figures on every bootstrap resample at once: the numbers ``classification_figures`` gives per row.

``classification_figures`` on one resample costs about a millisecond, almost all of it Python around small numpy
calls, and a default evaluation asks for it 1000 times per condition (82 000 times per model). Here each quantity
is computed for all resamples together, with the same floating-point operations in the same order, so every
figure is bit for bit the one the per-resample code gives (tests/robustness/evaluation compare them):

- counts (true positives, predictions, positives; per score group for AP) are exact integers, from per-image
  multiplicities;
- precisions, recalls, products and F1 are the same element-wise IEEE operations;
- a sum or mean over a ragged set (AP's threshold groups, the classes that have a positive) is taken by numpy's
  own reduction over rows of equal length, which reduces each row exactly as it reduces that row alone;
- ECE's per-bin score sums are sequential in resample order, as ``np.bincount`` adds them.

Inputs that the per-resample code would refuse or treat specially (NaN or out-of-range scores, targets outside
{-1, 0, 1}) are not handled here: ``supported`` says so and the caller falls back to the per-resample code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robustness.evaluation.statistics import ECE_BINS

METRICS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "ECE")


def supported(scores: np.ndarray, targets: np.ndarray) -> bool:
    """Whether every resample of these scores and targets passes ``multilabel_metrics``' input checks."""
    scores = np.asarray(scores, dtype=np.float64)
    return (scores.ndim == 2 and scores.shape == np.shape(targets) and not np.isnan(scores).any()
            and (scores.size == 0 or (scores.min() >= 0.0 and scores.max() <= 1.0))
            and set(np.unique(targets).tolist()) <= {-1, 0, 1})


def ragged_rows(values: np.ndarray, keep: np.ndarray, reduce: str) -> np.ndarray:
    """Per row of (B, K) ``values``: ``np.sum`` or ``np.mean`` of ``values[b][keep[b]]``; NaN where nothing is kept.

    Rows with the same number of kept entries are reduced together as one (rows, k) array, which numpy reduces
    row by row exactly as it reduces each row's 1-D array.
    """
    lengths = keep.sum(axis=1)
    packed = values[keep]
    starts = np.cumsum(lengths) - lengths
    out = np.full(values.shape[0], np.nan)
    for length in np.unique(lengths[lengths > 0]).tolist():
        rows = np.flatnonzero(lengths == length)
        block = packed[starts[rows, None] + np.arange(length)]
        out[rows] = block.mean(axis=1) if reduce == "mean" else block.sum(axis=1)
    return out


def _average_precisions(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) AP of one class on every resample (``metrics._class_average_precision``); NaN without a positive.

    A resample's threshold groups are the distinct scores of its kept images, highest first; each group's image
    and positive counts add up the multiplicities of the images that share that score.
    """
    kept = np.flatnonzero(labels != 0)
    if kept.size == 0:
        return np.full(weights.shape[0], np.nan)
    distinct, group = np.unique(-scores[kept], return_inverse=True)  # ascending -score: highest score first
    by_group = np.argsort(group, kind="stable")
    w = weights[:, kept[by_group]]  # (B, kept images), grouped
    hits = w * (labels[kept[by_group]] == 1)
    if distinct.size == kept.size:  # no tied scores: one image per group
        counts, positives = w, hits
    else:  # integer sums per group: differences of running sums at each group's last image
        ends = np.searchsorted(group[by_group], np.arange(distinct.size), side="right") - 1
        counts = np.diff(np.cumsum(w, axis=1)[:, ends], axis=1, prepend=0)
        positives = np.diff(np.cumsum(hits, axis=1)[:, ends], axis=1, prepend=0)
    n_pos = positives.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.cumsum(positives, axis=1) / np.cumsum(counts, axis=1)
        recall_step = positives / n_pos[:, None]
    ap = ragged_rows(recall_step * precision, counts > 0, "sum")
    ap[n_pos == 0] = np.nan
    return ap


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(precision + recall == 0, 0.0, 2 * precision * recall / (precision + recall))


def _calibration_errors(scores: np.ndarray, decided: np.ndarray, positive: np.ndarray, indices: np.ndarray,
                        weights: np.ndarray) -> np.ndarray:
    """(B,) ``expected_calibration_error`` of each resample's decided (image, class) pairs, as a fraction.

    One ``np.bincount`` over cells (bin, resample) takes the entries image by image in resample order and class by
    class, as the per-resample bincount does; an undecided entry adds 0.0, which leaves a sum of scores unchanged.
    Counts (positives per bin, decided pairs) come from the multiplicities ``weights``.
    """
    resamples = indices.shape[0]
    which = np.minimum((scores * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    order = indices.T  # (n, B); for one resample, entries (n, B, C) come image by image and class by class
    cells = ((which * resamples)[order] + np.arange(resamples)[:, None]).ravel()
    values = np.where(decided, scores, 0.0)[order].ravel()
    score_sum = np.bincount(cells, weights=values, minlength=ECE_BINS * resamples).reshape(ECE_BINS, resamples)
    in_bin = which[..., None] == np.arange(ECE_BINS)  # (N, C, bins)
    positive_sum = (weights @ (in_bin & (decided & positive)[..., None]).sum(axis=1)).T  # exact integer counts
    size = weights @ decided.sum(axis=1)
    gap = np.ascontiguousarray(np.abs(positive_sum - score_sum).T)  # (B, bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = gap.sum(axis=1) / size
    out[size == 0] = np.nan
    return out


def resampled_figures(scores: np.ndarray, targets: np.ndarray, threshold: float, indices: np.ndarray,
                      checkpoint: Callable[[], None] | None = None
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """{metric: (B,) values} and {"AP": (B, C) values} of ``classification_figures`` on every resample (rows of
    ``indices``), in percent; NaN where the per-resample code gives NaN. Call only when ``supported``.

    ``checkpoint()`` is called before each class's APs and before the calibration errors; what it raises stops
    the computation.
    """
    check = checkpoint or (lambda: None)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(targets).astype(np.int8)
    indices = np.asarray(indices)
    resamples = indices.shape[0]
    images = scores.shape[0]
    rows = (np.arange(resamples, dtype=np.int64)[:, None] * images + indices).ravel()
    weights = np.bincount(rows, minlength=resamples * images).reshape(resamples, images)  # multiplicities
    ap = np.stack([check() or _average_precisions(scores[:, c], labels[:, c], weights)
                   for c in range(scores.shape[1])], axis=1)
    evaluated = ~np.isnan(ap)
    predicted = (scores >= threshold) & (labels != 0)
    positive = labels == 1
    tp = weights @ (predicted & positive).astype(np.int64)
    n_pred = weights @ predicted.astype(np.int64)
    n_pos = weights @ positive.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cp = ragged_rows(tp / np.maximum(n_pred, 1), evaluated, "mean")
        cr = ragged_rows(tp / n_pos, evaluated, "mean")
        op = tp.sum(axis=1) / np.maximum(n_pred.sum(axis=1), 1)
        orec = tp.sum(axis=1) / n_pos.sum(axis=1)
    undefined = ~evaluated.any(axis=1)  # multilabel_metrics refuses these resamples: every metric but ECE is NaN
    metrics = {"mAP": 100.0 * ragged_rows(ap, evaluated, "mean"), "CP": 100.0 * cp, "CR": 100.0 * cr,
               "CF1": 100.0 * _f1(cp, cr), "OP": 100.0 * op, "OR": 100.0 * orec, "OF1": 100.0 * _f1(op, orec)}
    for values in metrics.values():
        values[undefined] = np.nan
    check()
    metrics["ECE"] = 100.0 * _calibration_errors(scores, labels != 0, positive, indices, weights)
    return metrics, {"AP": 100.0 * ap}
