"""POST /robustness on a live server: seeded masks, determinism, and figures recomputed from the exported model."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from robustness.masks import apply_mask, masks
from tests.server.conftest import CLASSIFIER, SEGMENTER
from tests.server.oracle import model_input, png_bytes, random_rgb, run_exported, sigmoid

IMAGE = png_bytes(random_rgb(100, 100, seed=21))
HEADERS = {"Content-Type": "image/png"}


def robustness(client, **params):
    response = client.post("/robustness", params=params, content=IMAGE, headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()


def test_same_seed_gives_the_same_json_apart_from_timing(client):
    first = robustness(client, model=CLASSIFIER, mask_ratio="high", n=8, seed=3)
    second = robustness(client, model=CLASSIFIER, mask_ratio="high", n=8, seed=3)
    assert first.pop("timing")["batch_size"] == 9  # the clean image and 8 masked copies in one batch
    second.pop("timing")
    assert first == second
    other = robustness(client, model=CLASSIFIER, mask_ratio="high", n=8, seed=4)
    assert [m["hole_ratio"] for m in other["masks"]] != [m["hole_ratio"] for m in first["masks"]]


def test_classifier_figures_equal_a_direct_computation(client, store):
    n, seed = 6, 7
    answer = robustness(client, model=CLASSIFIER, mask_ratio="b3", n=n, seed=seed)
    clean = model_input(store, CLASSIFIER, Image.open(io.BytesIO(IMAGE)))
    holes = masks(n, 128, 128, "b3", seed)
    batch = np.concatenate([clean[None], apply_mask(np.repeat(clean[None], n, axis=0), holes)]).astype(np.float32)
    scores = sigmoid(run_exported(store, CLASSIFIER, batch))
    clean_pos, masked_pos = scores[0] >= 0.5, scores[1:] >= 0.5
    names = list(answer["clean"]["scores"])
    assert answer["mask_ratio"] == {"spec": "b3", "range": [0.2, 0.3]}
    assert [m["hole_ratio"] for m in answer["masks"]] == pytest.approx(holes.mean(axis=(1, 2)), abs=1e-6)
    assert all(0.2 < m["hole_ratio"] <= 0.3 for m in answer["masks"])
    assert answer["retention"] == pytest.approx(
        {names[c]: masked_pos[:, c].mean() for c in np.flatnonzero(clean_pos)}, abs=1e-6)
    assert answer["flips"] == int((masked_pos != clean_pos).sum())
    assert answer["mean_score_drop"] == pytest.approx((scores[0] - scores[1:]).mean(), abs=1e-5)
    assert [m["labels"] for m in answer["masks"]] == [[names[c] for c in np.flatnonzero(row)] for row in masked_pos]


def test_ground_truth_labels_add_the_seven_metrics(client):
    answer = robustness(client, model=CLASSIFIER, n=4, labels="circle,star")
    assert set(answer["metrics"]) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}
    positives = sum(1 for m in answer["masks"] for name in m["labels"] if name in ("circle", "star"))
    predicted = sum(len(m["labels"]) for m in answer["masks"])
    assert answer["metrics"]["OR"] == pytest.approx(100 * positives / 8, abs=1e-4)
    assert answer["metrics"]["OP"] == pytest.approx(100 * positives / max(predicted, 1), abs=1e-4)


def test_return_masks_adds_the_masked_images(client):
    answer = robustness(client, model=CLASSIFIER, n=2, mask_ratio="b2", return_masks="true")
    for entry in answer["masks"]:
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["png_base64"]))))
        assert image.shape == (128, 128, 3)
        black = np.all(image == 0, axis=2).mean()  # mean = 0: a hole is drawn as black
        assert black >= entry["hole_ratio"] - 1e-9


def test_segmenter_reports_miou_inside_and_outside_the_holes(client, store):
    n, seed = 4, 1
    answer = robustness(client, model=SEGMENTER, mask_ratio="b5", n=n, seed=seed)
    assert answer["task"] == "segmentation" and answer["threshold"] is None
    clean = model_input(store, SEGMENTER, Image.open(io.BytesIO(IMAGE)))
    holes = masks(n, 64, 64, "b5", seed)
    batch = np.concatenate([clean[None], apply_mask(np.repeat(clean[None], n, axis=0), holes)]).astype(np.float32)
    maps = np.argmax(run_exported(store, SEGMENTER, batch), axis=1)
    for entry, hole, masked in zip(answer["masks"], holes, maps[1:], strict=True):
        region = hole
        ref, pred = maps[0][region], masked[region]
        ious = [((ref == c) & (pred == c)).sum() / ((ref == c) | (pred == c)).sum()
                for c in np.union1d(ref, pred)]
        assert entry["miou_inside"] == pytest.approx(np.mean(ious), abs=1e-6)
        assert entry["changed_pixels"] == int((masked != maps[0]).sum())
    assert 0.0 <= answer["miou"]["inside_holes"] <= 1.0 and 0.0 <= answer["miou"]["outside_holes"] <= 1.0


@pytest.mark.parametrize(("params", "fragment"), [
    ({"n": 65}, "<= 64"),
    ({"n": 0}, ">= 1"),
    ({"mask_ratio": "huge"}, "low|medium|high|b1..b6|a-b"),
    ({"mask_ratio": "0.7-0.2"}, "empty"),
    ({"labels": "circle,unicorn"}, "unicorn"),
])
def test_bad_parameters_are_422_with_what_is_allowed(client, params, fragment):
    response = client.post("/robustness", params={"model": CLASSIFIER, **params}, content=IMAGE, headers=HEADERS)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_parameter" and fragment in response.json()["detail"]


def test_unknown_label_lists_the_class_names(client):
    response = client.post("/robustness", params={"labels": "unicorn"}, content=IMAGE, headers=HEADERS)
    assert "circle" in response.json()["detail"] and "moon" in response.json()["detail"]


def test_labels_on_a_segmenter_are_400(client):
    response = client.post("/robustness", params={"model": SEGMENTER, "labels": "x"}, content=IMAGE, headers=HEADERS)
    assert response.status_code == 400 and response.json()["error"] == "labels_not_supported"
