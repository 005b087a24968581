"""Answer building: labels, class-map statistics and PNGs, robustness figures, against hand-computed values."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import jaccard_score

from server.postprocess import VOC_PALETTE, class_map, labels_above, palette_png, region_statistics, resize_class_map
from server.robustness_report import classification_robustness, jaccard, region_miou, segmentation_robustness

NAMES = ["a", "b", "c"]


def test_labels_above_threshold_highest_first_capped_by_top_k():
    scores = np.array([0.7, 0.2, 0.9])
    assert labels_above(scores, NAMES, 0.5) == [{"name": "c", "score": 0.9}, {"name": "a", "score": 0.7}]
    assert labels_above(scores, NAMES, 0.5, top_k=1) == [{"name": "c", "score": 0.9}]
    assert labels_above(scores, NAMES, 0.95) == []
    assert labels_above(np.array([0.5, 0.4, 0.1]), NAMES, 0.5) == [{"name": "a", "score": 0.5}]  # >= threshold


def test_region_statistics_counts_areas_and_eight_connected_instances():
    classes = np.zeros((40, 40), dtype=np.uint8)
    classes[0:2, 0:2] = 1  # 4 px
    classes[2:4, 2:4] = 1  # touches the first diagonally: same instance
    classes[10:15, 10:15] = 1  # 25 px, separate
    classes[20:40, 0:40] = 2  # 800 px
    stats = {entry["name"]: entry for entry in region_statistics(classes, NAMES)}
    assert stats["b"]["pixels"] == 33 and stats["b"]["instances"] == {"count": 2, "S": 2, "M": 0, "L": 0}
    assert stats["c"]["pixels"] == 800 and stats["c"]["fraction"] == 0.5
    assert stats["a"]["pixels"] == 1600 - 833
    big = np.ones((100, 100), dtype=np.uint8)
    assert region_statistics(big, NAMES)[0]["instances"] == {"count": 1, "S": 0, "M": 0, "L": 1}


def test_class_map_png_keeps_class_ids_and_resizes_nearest():
    logits = np.zeros((3, 2, 2), dtype=np.float32)
    logits[1, 0, 0] = logits[2, 1, 1] = 5.0
    classes = class_map(logits)
    assert classes.tolist() == [[1, 0], [0, 2]]
    big = resize_class_map(classes, (4, 4))
    assert big.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]]
    image = Image.open(io.BytesIO(palette_png(big)))
    assert image.mode == "P" and np.asarray(image).tolist() == big.tolist()
    assert image.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1


def test_palette_is_the_training_palette():
    from training.datasets.palette import VOC_PALETTE as TRAINING_PALETTE

    assert np.array_equal(VOC_PALETTE, TRAINING_PALETTE)


def test_jaccard_of_label_sets():
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0
    assert jaccard({1}, set()) == 0.0


def test_region_miou_equals_sklearn_macro_jaccard_on_present_classes():
    rng = np.random.default_rng(0)
    reference, prediction = rng.integers(0, 4, (30, 30)), rng.integers(0, 4, (30, 30))
    region = rng.random((30, 30)) < 0.4
    expected = jaccard_score(reference[region], prediction[region], average="macro")
    assert region_miou(reference, prediction, region, 4) == pytest.approx(expected)
    assert region_miou(reference, prediction, np.zeros_like(region), 4) is None


def test_classification_robustness_figures():
    clean = np.array([0.9, 0.6, 0.1])
    masked = np.array([[0.8, 0.4, 0.2],
                       [0.3, 0.7, 0.6]])
    report = classification_robustness(clean, masked, NAMES, 0.5, np.array([0.55, 0.58]))
    assert report["retention"] == {"a": 0.5, "b": 0.5}
    assert report["flips"] == 1 + 2  # mask 0 drops b; mask 1 drops a and adds c
    assert report["jaccard"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-6)
    assert report["mean_score_drop"] == pytest.approx(np.mean(clean - masked), abs=1e-6)
    assert report["mean_score_drop_positive"] == pytest.approx(np.mean((clean - masked)[:, :2]), abs=1e-6)
    assert [m["labels"] for m in report["masks"]] == [["a"], ["b", "c"]]
    assert report["hole_ratio"] == {"mean": 0.565, "min": 0.55, "max": 0.58}
    assert "metrics" not in report


def test_ground_truth_gives_the_multilabel_metrics_on_the_masked_set():
    masked = np.array([[0.8, 0.4, 0.2], [0.3, 0.7, 0.6]])
    report = classification_robustness(np.array([0.9, 0.6, 0.1]), masked, NAMES, 0.5, np.array([0.5, 0.5]),
                                       truth=["a"])
    metrics = report["metrics"]
    assert metrics["OP"] == pytest.approx(100 * 1 / 3, abs=1e-4)  # one TP (row 0, a) among 3 predictions
    assert metrics["OR"] == 50.0 and metrics["mAP"] == 100.0


def test_segmentation_robustness_inside_and_outside_holes():
    clean = np.array([[0, 0], [1, 1]])
    masked = np.array([[[0, 1], [1, 1]]])
    holes = np.array([[[False, True], [False, False]]])
    report = segmentation_robustness(clean, masked, holes, ["bg", "fg"], np.array([0.25]))
    assert report["clean"] == {"classes": [{"id": 0, "name": "bg", "fraction": 0.5},
                                           {"id": 1, "name": "fg", "fraction": 0.5}]}
    assert report["masks"][0]["miou_inside"] == 0.0  # the one hole pixel flipped 0 -> 1
    assert report["masks"][0]["miou_outside"] == 1.0
    assert report["miou"]["all"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-6)
    assert report["masks"][0]["changed_pixels"] == 1
