"""Every bootstrap resample's classifier figures at once equal, bit for bit, ``classification_figures`` per row."""

from __future__ import annotations

import numpy as np
import pytest

from robustness.evaluation.accumulators import CLASSIFIER_METRICS, classification_figures
from robustness.evaluation.bootstrap_classification import ragged_rows, resampled_figures, supported
from robustness.evaluation.statistics import bootstrap_indices

CASES = {
    # name: (images, classes, resamples, seed, share of ignored targets, score levels (0: continuous), threshold)
    "continuous scores": (40, 10, 300, 0, 0.0, 0, 0.5),
    "tied scores and ignored targets": (60, 6, 300, 1, 0.1, 10, 0.5),
    "few images, some resamples without a positive": (6, 4, 400, 2, 0.2, 3, 0.4),
    "scores of 0 and 1 and a threshold on a level": (30, 5, 200, 3, 0.0, 1, 1.0),
    "more than 8 classes to average, long groups": (150, 12, 100, 4, 0.05, 0, 0.3),
}


def _data(images: int, classes: int, seed: int, ignored: float, levels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random((images, classes)) < 0.25, 1, -1)
    targets[rng.random((images, classes)) < ignored] = 0
    scores = np.clip(rng.random((images, classes)) * 0.7 + 0.3 * (targets > 0), 0.0, 1.0)
    if levels:
        scores = np.round(scores * levels) / levels
    return scores, targets.astype(np.int8)


@pytest.mark.parametrize("case", list(CASES))
def test_all_resamples_at_once_equal_one_resample_at_a_time(case: str) -> None:
    images, classes, resamples, seed, ignored, levels, threshold = CASES[case]
    scores, targets = _data(images, classes, seed, ignored, levels)
    indices = bootstrap_indices(images, resamples, seed)
    assert supported(scores, targets)
    metrics, per_class = resampled_figures(scores, targets, threshold, indices)
    expected = [classification_figures(scores, targets, threshold, row) for row in indices]
    assert list(metrics) == list(CLASSIFIER_METRICS)
    for name in CLASSIFIER_METRICS:
        oracle = np.array([row[0][name] for row in expected])
        assert np.array_equal(metrics[name], oracle, equal_nan=True), name
    assert np.array_equal(per_class["AP"], np.array([row[1]["AP"] for row in expected]), equal_nan=True)


def test_a_resample_without_any_positive_has_no_metric_but_its_calibration_error() -> None:
    scores = np.array([[0.9, 0.2], [0.1, 0.6], [0.4, 0.3]])
    targets = np.array([[1, -1], [-1, -1], [-1, 1]], dtype=np.int8)
    indices = np.array([[1, 1, 1], [0, 1, 2]])
    metrics, per_class = resampled_figures(scores, targets, 0.5, indices)
    assert all(np.isnan(metrics[name][0]) for name in CLASSIFIER_METRICS[:-1])
    # image 1 three times: scores 0.1 and 0.6, both negatives, in bins 1 and 9: |0 - 3*0.1| + |0 - 3*0.6| over 6
    assert metrics["ECE"][0] == pytest.approx(100.0 * (0.3 + 1.8) / 6)
    assert np.isnan(per_class["AP"][0]).all()
    # all three images: class 0 ranks its positive first (AP 1); class 1 ranks a negative (0.6) above it (AP 1/2)
    assert metrics["mAP"][1] == 75.0 and per_class["AP"][1].tolist() == [100.0, 50.0]


def test_ragged_rows_reduce_only_the_kept_entries_of_each_row() -> None:
    values = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0], [5.0, 5.0, 5.0]])
    keep = np.array([[True, False, True], [False, True, False], [False, False, False]])
    assert ragged_rows(values, keep, "sum")[:2].tolist() == [5.0, 16.0]
    assert ragged_rows(values, keep, "mean")[:2].tolist() == [2.5, 16.0]
    assert np.isnan(ragged_rows(values, keep, "sum")[2])


def test_inputs_the_metrics_refuse_are_left_to_the_per_resample_code() -> None:
    targets = np.array([[1, -1]], dtype=np.int8)
    assert not supported(np.array([[np.nan, 0.5]]), targets)
    assert not supported(np.array([[1.5, 0.5]]), targets)
    assert not supported(np.array([[0.5, 0.5]]), np.array([[2, -1]]))
    assert supported(np.array([[0.0, 1.0]]), targets)
