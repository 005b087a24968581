"""One-image comparisons: label-set Jaccard, confusion matrices with void and regions, IoU, pixel accuracy."""

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import jaccard_score

from robustness.metrics import confusion_matrix, iou_per_class, jaccard, mean_iou, pixel_accuracy


def test_jaccard_of_label_sets_is_undefined_for_two_empty_sets():
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert jaccard({1}, set()) == 0.0
    assert jaccard(set(), set()) is None  # nothing to compare: not a perfect 1.0


def test_confusion_matrix_equals_sklearn_on_a_region():
    rng = np.random.default_rng(0)
    reference, prediction = rng.integers(0, 4, (30, 30)), rng.integers(0, 4, (30, 30))
    region = rng.random((30, 30)) < 0.4
    expected = sk_confusion_matrix(reference[region], prediction[region], labels=range(4))
    np.testing.assert_array_equal(confusion_matrix(reference, prediction, 4, region), expected)
    assert mean_iou(confusion_matrix(reference, prediction, 4, region)) == pytest.approx(
        jaccard_score(reference[region], prediction[region], average="macro"))


def test_void_reference_pixels_count_nowhere():
    reference = np.array([[0, 1, 255], [1, 1, 255]])
    prediction = np.array([[0, 0, 1], [1, 1, 0]])
    conf = confusion_matrix(reference, prediction, 2)
    assert conf.tolist() == [[1, 0], [1, 2]]
    assert pixel_accuracy(conf) == 0.75
    np.testing.assert_allclose(iou_per_class(conf), [1 / 2, 2 / 3])
    assert mean_iou(conf, [1]) == pytest.approx(2 / 3)


def test_absent_classes_and_empty_regions_are_nan():
    conf = confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 3)
    iou = iou_per_class(conf)
    assert iou[0] == 1.0 and math.isnan(iou[1]) and math.isnan(iou[2])
    assert math.isnan(mean_iou(conf, [1, 2]))
    empty = confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 3, np.zeros((2, 2), bool))
    assert math.isnan(pixel_accuracy(empty)) and math.isnan(mean_iou(empty))


def test_out_of_range_ids_and_shape_mismatch_are_errors():
    with pytest.raises(ValueError, match=r"reference holds class ids \[3\]"):
        confusion_matrix(np.array([[3]]), np.array([[0]]), 3)
    with pytest.raises(ValueError, match=r"prediction holds class ids \[5\]"):
        confusion_matrix(np.array([[0]]), np.array([[5]]), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)
