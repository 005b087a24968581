"""RISE saliency: a hand-computed two-mask case, the never-kept rule, overlays, peaks, and an oracle scene."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from robustness.masks import masks
from robustness.saliency import (
    explained_classes,
    heatmap_peak,
    kept_class_fraction,
    rgb_png,
    rise_saliency,
    saliency_entries,
    saliency_overlay,
)


def test_two_masks_by_hand():
    # Pixel (0,0) kept by both, (0,1) by the first only, (1,0) by the second only, (1,1) by neither.
    keep = np.array([[[1, 1], [0, 0]],
                     [[1, 0], [1, 0]]])
    scores = np.array([[0.8, 0.1],
                       [0.2, 0.5]])
    heat = rise_saliency(keep, scores)
    assert heat.shape == (2, 2, 2) and heat.dtype == np.float32
    # class 0: (0.8 + 0.2) / 2, 0.8 / 1, 0.2 / 1, never kept
    np.testing.assert_allclose(heat[0], [[0.5, 0.8], [0.2, np.nan]], rtol=1e-6)
    np.testing.assert_allclose(heat[1], [[0.3, 0.1], [0.5, np.nan]], rtol=1e-6)


def test_a_pixel_no_mask_kept_is_nan_and_skipped_by_the_peak():
    keep = np.ones((3, 4, 4))
    keep[:, 0, 0] = 0
    heat = rise_saliency(keep, np.array([[1.0], [2.0], [3.0]]))[0]
    assert np.isnan(heat[0, 0]) and np.isfinite(heat).sum() == 15
    assert heat[1, 1] == pytest.approx(2.0)  # kept everywhere: the plain mean score
    assert heatmap_peak(heat) == (0, 1)  # all finite values tie: the first in row-major order, NaN skipped


def test_peak_is_the_maximum_and_ties_go_first():
    heat = np.zeros((5, 7), dtype=np.float32)
    heat[3, 2] = heat[4, 6] = 1.0
    assert heatmap_peak(heat) == (3, 2)
    with pytest.raises(ValueError, match="no peak"):
        heatmap_peak(np.full((2, 2), np.nan))


@pytest.mark.parametrize(("keep", "scores", "match"), [
    (np.ones((2, 3, 3)), np.ones((3, 1)), "must be"),
    (np.ones((3, 3)), np.ones((3, 1)), "must be"),
    (np.full((1, 3, 3), 0.5), np.ones((1, 1)), "only 0 and 1"),
])
def test_bad_shapes_and_values_are_refused(keep, scores, match):
    with pytest.raises(ValueError, match=match):
        rise_saliency(keep, scores)


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_overlay_is_an_rgb_png_of_the_image_size_with_nan_left_uncoloured():
    image = np.full((6, 8, 3), 100, dtype=np.uint8)
    heat = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (6, 1))
    heat[0, 0] = np.nan
    out = decode(saliency_overlay(image, heat))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[3, 7, 0] > out[3, 7, 2] and out[3, 1, 2] > out[3, 1, 0]  # jet: high = red, low = blue
    flat = decode(saliency_overlay(image, np.full((6, 8), 0.3)))  # constant map: one colour, no division by 0
    assert (flat == flat[0, 0]).all()
    with pytest.raises(ValueError, match="expected a uint8"):
        saliency_overlay(image, heat[:, :4])


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (7, 1, 3), (33, 20, 3)])
def test_rgb_png_decodes_to_the_same_pixels(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    png = rgb_png(pixels)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), pixels)


def test_kept_class_fraction_counts_the_clean_pixels_that_keep_their_class():
    clean = np.array([[0, 1, 1], [2, 2, 2]])
    masked = np.array([[[0, 1, 0], [2, 2, 2]],
                       [[1, 1, 1], [0, 0, 2]]])
    np.testing.assert_allclose(kept_class_fraction(clean, masked, [1, 2, 3]), [[0.5, 1.0, 0.0], [1.0, 1 / 3, 0.0]])


# ---------------------------------------------------------------- an oracle scene

SIZE = 64
BOX = (40, 12, 56, 30)  # y0, x0, y1, x1 of the one object


def box_model(keep: np.ndarray) -> np.ndarray:
    """A pure numpy "model": the object's score is the fraction of its box that is visible; a second class is
    a constant (it depends on no pixel)."""
    y0, x0, y1, x1 = BOX
    visible = keep[:, y0:y1, x0:x1].mean(axis=(1, 2))
    return np.stack([visible, np.full_like(visible, 0.3)], axis=1)


@pytest.mark.parametrize("ratio", ["b3", "b6"])
def test_the_peak_of_an_object_lies_inside_its_box(ratio):
    keep = ~masks(32, SIZE, SIZE, ratio, seed=0)
    heat = rise_saliency(keep, box_model(keep))
    y, x = heatmap_peak(heat[0])
    y0, x0, y1, x1 = BOX
    assert y0 <= y < y1 and x0 <= x < x1
    np.testing.assert_allclose(heat[1], 0.3, rtol=1e-6)  # a score that ignores the image gives a flat map
    inside = np.nanmean(heat[0, y0:y1, x0:x1])
    outside = np.nanmean(np.where(np.pad(np.ones((y1 - y0, x1 - x0)), ((y0, SIZE - y1), (x0, SIZE - x1))) == 0,
                                  heat[0], np.nan))
    assert inside > outside


def test_saliency_entries_for_a_sigmoid_classifier_on_the_oracle_scene():
    holes = masks(32, SIZE, SIZE, "b3", seed=1)
    keep = np.concatenate([np.ones((1, SIZE, SIZE), dtype=bool), ~holes])
    probs = box_model(keep)
    logits = np.log(probs / (1 - probs + 1e-12) + 1e-12)  # sigmoid(logits) = probs
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    report = {"reference": {"source": "clean_prediction", "classes": ["box"]}}
    classes = explained_classes("classification", "sigmoid", report, ["box", "flat"])
    assert classes == [0]
    [entry] = saliency_entries("classification", "sigmoid", ["box", "flat"], logits, holes, classes, image)
    assert entry["label"] == "box" and entry["score"] == pytest.approx(1.0, abs=1e-6)
    y0, x0, y1, x1 = BOX
    assert y0 <= entry["peak"]["y"] < y1 and x0 <= entry["peak"]["x"] < x1
    assert decode(base64.b64decode(entry["png_base64"])).shape == (SIZE, SIZE, 3)
    assert saliency_entries("classification", "sigmoid", ["box", "flat"], logits, holes, [], image) == []


def test_saliency_entries_for_a_segmenter_score_each_foreground_class():
    clean = np.zeros((SIZE, SIZE), dtype=np.int64)
    y0, x0, y1, x1 = BOX
    clean[y0:y1, x0:x1] = 2
    holes = masks(32, SIZE, SIZE, "b4", seed=2)
    maps = np.where(holes, 0, clean[None])  # the object is lost wherever a hole covers it
    outputs = np.stack([np.eye(3)[m].transpose(2, 0, 1) for m in np.concatenate([clean[None], maps])])
    report = {"clean": {"classes": [{"id": 0, "name": "background"}, {"id": 2, "name": "square"}]}}
    classes = explained_classes("segmentation", "softmax", report, ["background", "circle", "square"])
    assert classes == [2]
    [entry] = saliency_entries("segmentation", "softmax", ["background", "circle", "square"], outputs, holes,
                               classes, np.zeros((SIZE, SIZE, 3), dtype=np.uint8))
    assert entry["label"] == "square"
    assert entry["score"] == pytest.approx((y1 - y0) * (x1 - x0) / SIZE**2, abs=1e-6)  # its share of the map
    assert y0 <= entry["peak"]["y"] < y1 and x0 <= entry["peak"]["x"] < x1


def test_softmax_explains_the_reference_class():
    report = {"reference": {"source": "labels", "class": "b", "score": 0.2}}
    assert explained_classes("classification", "softmax", report, ["a", "b", "c"]) == [1]
