"""Occlusion reports of one image under n masks, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from robustness.occlusion_report import (
    LabelsNotSupportedError,
    classification_robustness,
    occluded_batch,
    reference_labels,
    segmentation_robustness,
    softmax_robustness,
)

NAMES = ["a", "b", "c"]


def test_classification_robustness_on_the_clean_prediction():
    clean = np.array([0.9, 0.6, 0.1])
    masked = np.array([[0.8, 0.4, 0.2],
                       [0.3, 0.7, 0.6]])
    report = classification_robustness(clean, masked, NAMES, 0.5, np.array([0.55, 0.58]))
    assert report["reference"] == {"source": "clean_prediction", "classes": ["a", "b"]}
    assert report["warning"] is None
    assert report["retention"] == {"a": 0.5, "b": 0.5} and report["mean_retention"] == 0.5
    assert report["score_drop_present"]["mean"] == pytest.approx((0.1 + 0.2 + 0.6 - 0.1) / 4)
    assert report["score_drop_present"]["per_class"] == pytest.approx({"a": (0.1 + 0.6) / 2, "b": (0.2 - 0.1) / 2})
    # c is the only absent class: it becomes positive under mask 1; its score rises by 0.1 and by 0.5.
    assert report["false_positives"] == {"mean_per_mask": 0.5, "gained": {"c": 1},
                                         "mean_score_rise_absent": pytest.approx(0.3)}
    assert report["flips"] == 1 + 2  # mask 0 drops b; mask 1 drops a and adds c
    assert report["jaccard"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-6)
    assert [m["labels"] for m in report["masks"]] == [["a"], ["b", "c"]]
    assert [m["lost"] for m in report["masks"]] == [["b"], ["a"]]
    assert [m["gained"] for m in report["masks"]] == [[], ["c"]]
    assert report["hole_ratio"] == {"mean": 0.565, "min": 0.55, "max": 0.58}
    assert "clean_correctness" not in report and "metrics" not in report


def test_classification_robustness_judges_the_true_labels():
    """The clean image misses the true class b and has a false positive a: retention is about b."""
    clean = np.array([0.9, 0.3, 0.1])
    masked = np.array([[0.8, 0.6, 0.2], [0.2, 0.1, 0.7]])
    report = classification_robustness(clean, masked, NAMES, 0.5, np.array([0.5, 0.5]), truth=["b"])
    assert report["reference"] == {"source": "labels", "classes": ["b"]}
    assert report["retention"] == {"b": 0.5}
    assert report["clean_correctness"] == {"hits": [], "misses": ["b"], "false_positives": ["a"]}
    # a was already positive on the clean image, so only c (mask 1) is a false positive a mask creates.
    assert report["false_positives"]["gained"] == {"c": 1}
    assert report["false_positives"]["mean_score_rise_absent"] == pytest.approx((-0.1 + 0.1 - 0.7 + 0.6) / 4)
    assert report["score_drop_present"]["mean"] == pytest.approx((-0.3 + 0.2) / 2)


def test_nothing_predicted_and_no_labels_is_a_warning_not_perfect_robustness():
    report = classification_robustness(np.array([0.1, 0.2, 0.3]), np.array([[0.1, 0.1, 0.1], [0.2, 0.6, 0.1]]),
                                       NAMES, 0.5, np.array([0.5, 0.5]))
    assert report["reference"] == {"source": "clean_prediction", "classes": []}
    assert "predicts no class" in report["warning"]
    assert report["retention"] is None and report["mean_retention"] is None
    assert [m["jaccard"] for m in report["masks"]] == [None, 0.0]  # two empty sets: null, not 1.0
    assert report["jaccard"] == 0.0
    assert report["false_positives"]["gained"] == {"b": 1}


def test_softmax_robustness_figures():
    clean = np.array([0.7, 0.2, 0.1])
    masked = np.array([[0.5, 0.4, 0.1], [0.3, 0.6, 0.1], [0.6, 0.1, 0.3]])
    report = softmax_robustness(clean, masked, NAMES, np.array([0.5, 0.5, 0.5]))
    assert report["clean"]["top1"] == {"name": "a", "score": 0.7}
    assert report["reference"] == {"source": "clean_prediction", "class": "a", "score": 0.7}
    assert report["top1_retention"] == pytest.approx(2 / 3, abs=1e-6)
    assert report["true_class_score_drop"]["per_mask"] == pytest.approx([0.2, 0.4, 0.1])
    assert report["true_class_score_drop"]["mean"] == pytest.approx(0.7 / 3, abs=1e-6)
    assert [m["top1"]["name"] for m in report["masks"]] == ["a", "b", "a"]
    truth = softmax_robustness(clean, masked, NAMES, np.array([0.5, 0.5, 0.5]), truth=["b"])
    assert truth["top1_retention"] == pytest.approx(1 / 3, abs=1e-6)
    assert truth["true_class_score_drop"]["per_mask"] == pytest.approx([-0.2, -0.4, 0.1])
    assert truth["clean_correctness"] == {"correct": False, "true_class_rank": 2}


def test_segmentation_robustness_ignores_the_background_in_the_foreground_miou():
    clean = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    masked = clean.copy()[None]
    masked[0, 3, 3] = 0  # one foreground pixel lost
    holes = np.zeros((1, 4, 4), dtype=bool)
    holes[0, 2:, 2:] = True
    report = segmentation_robustness(clean, masked, holes, ["bg", "fg"], np.array([0.25]))
    assert report["clean"] == {"classes": [{"id": 0, "name": "bg", "fraction": 0.75},
                                           {"id": 1, "name": "fg", "fraction": 0.25}]}
    assert report["per_class_iou"] == {"bg": pytest.approx(12 / 13), "fg": 0.75}
    assert report["miou_foreground"] == 0.75 and report["warning"] is None
    assert report["inside_holes"] == {"miou_foreground": 0.75, "pixel_agreement": 0.75}
    assert report["outside_holes"] == {"miou_foreground": None, "pixel_agreement": 1.0}  # no fg pixel outside
    assert report["masks"][0]["changed_pixels"] == 1 and report["masks"][0]["miou_foreground_inside"] == 0.75


def test_an_all_background_clean_map_is_a_warning_not_a_perfect_score():
    clean = np.zeros((4, 4), dtype=np.uint8)
    masked = np.zeros((2, 4, 4), dtype=np.uint8)
    holes = np.ones((2, 4, 4), dtype=bool)
    report = segmentation_robustness(clean, masked, holes, ["bg", "fg"], np.array([1.0, 1.0]))
    assert report["miou_foreground"] is None and report["inside_holes"]["miou_foreground"] is None
    assert "only background" in report["warning"]
    assert report["per_class_iou"] == {"bg": 1.0}


def test_truth_figures_count_void_nowhere():
    truth = np.array([[0, 1], [1, 255]])
    clean = np.array([[0, 1], [0, 1]])
    masked = np.array([[[0, 0], [0, 0]]])
    report = segmentation_robustness(clean, masked, np.zeros((1, 2, 2), dtype=bool), ["bg", "fg"],
                                     np.array([0.0]), truth=truth)["truth"]
    assert report["void_fraction"] == 0.25
    assert report["clean"]["pixel_accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert report["clean"]["per_class_iou"] == {"bg": 0.5, "fg": 0.5}
    assert report["masked"]["pixel_accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert report["masked"]["per_class_iou"] == {"bg": pytest.approx(1 / 3, abs=1e-6), "fg": 0.0}
    assert report["masked"]["miou"] == pytest.approx(1 / 6, abs=1e-6)
    assert report["miou_drop"] == pytest.approx(0.5 - 1 / 6, abs=1e-6)


def test_occluded_batch_is_the_clean_input_then_copies_zeroed_in_their_holes():
    clean = np.random.default_rng(0).random((3, 32, 40), dtype=np.float32) + 1.0
    batch, holes = occluded_batch(clean, (0.2, 0.4), 3, seed=5)
    assert batch.shape == (4, 3, 32, 40) and batch.dtype == np.float32 and holes.shape == (3, 32, 40)
    np.testing.assert_array_equal(batch[0], clean)
    for copy, hole in zip(batch[1:], holes, strict=True):
        assert 0.2 <= hole.mean() <= 0.4
        assert (copy[:, hole] == 0).all() and np.array_equal(copy[:, ~hole], clean[:, ~hole])
    again, _ = occluded_batch(clean, (0.2, 0.4), 3, seed=5)
    np.testing.assert_array_equal(again, batch)


def test_reference_labels_are_checked_against_the_model():
    assert reference_labels(None, NAMES, "classification") is None
    assert reference_labels(" b, a,b ", NAMES, "classification") == ["b", "a"]
    with pytest.raises(ValueError, match=r"labels: z is not a class of this model \(allowed: a, b, c\)"):
        reference_labels("a,z", NAMES, "classification")
    with pytest.raises(ValueError, match="give exactly one true class"):
        reference_labels("a,b", NAMES, "classification", "softmax")
    with pytest.raises(LabelsNotSupportedError):
        reference_labels("a", NAMES, "segmentation")
