"""POST /robustness on a live server: seeded masks, determinism, and every figure recomputed by hand (numpy) from
the exported model run directly on the same seeded masks."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from robustness.masks import apply_mask, masks
from tests.server.conftest import CLASSIFIER, SEGMENTER, SEGMENTER_SIZE, SOFTMAX_CLASSIFIER
from tests.server.oracle import model_input, png_bytes, random_rgb, run_exported, sigmoid, softmax

IMAGE = png_bytes(random_rgb(100, 100, seed=21))
HEADERS = {"Content-Type": "image/png"}
CLASSIFIER_SIZE = 128


def robustness(client, **params):
    response = client.post("/robustness", params=params, content=IMAGE, headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code
    return body["detail"]


def oracle_outputs(store, name: str, size: int, n: int, ratio: str, seed: int, image: bytes = IMAGE):
    """The exported model's outputs on the clean input followed by the n seeded masked copies, and the holes."""
    clean = model_input(store, name, Image.open(io.BytesIO(image)))
    holes = masks(n, size, size, ratio, seed)
    batch = np.concatenate([clean[None], apply_mask(np.repeat(clean[None], n, axis=0), holes)]).astype(np.float32)
    return run_exported(store, name, batch), holes


@pytest.fixture(scope="module")
def class_names(client) -> dict[str, list[str]]:
    return {m["name"]: m["class_names"] for m in client.get("/models").json()["models"]}


def test_same_seed_gives_the_same_json_apart_from_timing(client):
    first = robustness(client, model=CLASSIFIER, mask_ratio="high", n=8, seed=3)
    second = robustness(client, model=CLASSIFIER, mask_ratio="high", n=8, seed=3)
    assert first.pop("timing")["batch_size"] == 9  # the clean image and 8 masked copies in one batch
    second.pop("timing")
    assert first == second
    other = robustness(client, model=CLASSIFIER, mask_ratio="high", n=8, seed=4)
    assert [m["hole_ratio"] for m in other["masks"]] != [m["hole_ratio"] for m in first["masks"]]


# ---------------------------------------------------------------- multi-label (sigmoid)


def test_sigmoid_figures_on_the_clean_prediction_equal_a_direct_computation(client, store, class_names):
    n, seed = 6, 7
    logits, holes = oracle_outputs(store, CLASSIFIER, CLASSIFIER_SIZE, n, "b3", seed)
    scores = sigmoid(logits)
    ranked = np.sort(scores[0])[::-1]
    threshold = round(float((ranked[2] + ranked[3]) / 2), 6)  # the clean image predicts exactly 3 classes
    answer = robustness(client, model=CLASSIFIER, mask_ratio="b3", n=n, seed=seed, threshold=threshold)
    names = class_names[CLASSIFIER]
    clean_pos, masked_pos = scores[0] >= threshold, scores[1:] >= threshold
    ref = np.flatnonzero(clean_pos)
    assert len(ref) == 3 and answer["threshold"] == threshold and answer["activation"] == "sigmoid"
    assert answer["mask_ratio"] == {"spec": "b3", "range": [0.2, 0.3]}
    assert [m["hole_ratio"] for m in answer["masks"]] == pytest.approx(holes.mean(axis=(1, 2)), abs=1e-6)
    assert all(0.2 < m["hole_ratio"] <= 0.3 for m in answer["masks"])
    assert answer["reference"] == {"source": "clean_prediction", "classes": [names[c] for c in ref]}
    assert answer["warning"] is None
    assert answer["retention"] == pytest.approx({names[c]: masked_pos[:, c].mean() for c in ref}, abs=1e-6)
    assert answer["mean_retention"] == pytest.approx(masked_pos[:, ref].mean(), abs=1e-6)
    drops = scores[0] - scores[1:]
    assert answer["score_drop_present"]["mean"] == pytest.approx(drops[:, ref].mean(), abs=1e-5)
    assert answer["score_drop_present"]["per_class"] == pytest.approx(
        {names[c]: drops[:, c].mean() for c in ref}, abs=1e-5)
    absent = np.setdiff1d(np.arange(len(names)), ref)
    gained = masked_pos[:, absent]  # absent classes are all below the threshold on the clean image here
    fp = answer["false_positives"]
    assert fp["mean_per_mask"] == pytest.approx(gained.sum(axis=1).mean(), abs=1e-6)
    assert fp["gained"] == {names[absent[j]]: int(gained[:, j].sum()) for j in np.flatnonzero(gained.sum(axis=0))}
    assert fp["mean_score_rise_absent"] == pytest.approx((scores[1:] - scores[0])[:, absent].mean(), abs=1e-5)
    assert answer["flips"] == int((masked_pos != clean_pos).sum())
    for entry, row in zip(answer["masks"], masked_pos, strict=True):
        assert entry["labels"] == [names[c] for c in np.flatnonzero(row)]
        union = (row | clean_pos).sum()
        assert entry["jaccard"] == pytest.approx((row & clean_pos).sum() / union, abs=1e-6)
        assert entry["lost"] == [names[c] for c in ref if not row[c]]
    assert {"metrics", "mean_score_drop", "mean_score_drop_positive"}.isdisjoint(answer)


def test_a_true_class_the_model_scores_low_gives_low_retention(client, store, class_names):
    """labels= judges the true class, not the clean prediction: a class the model misses is not 'retained'."""
    n, seed = 8, 0
    logits, _ = oracle_outputs(store, CLASSIFIER, CLASSIFIER_SIZE, n, "high", seed)
    scores = sigmoid(logits)
    names = class_names[CLASSIFIER]
    low = int(np.argmin(scores[0]))
    threshold = round(float(np.clip(scores[:, low].max() + 0.02, 0.5, 0.99)), 6)
    assert scores[:, low].max() < threshold  # the premise: this class is below the threshold everywhere
    answer = robustness(client, model=CLASSIFIER, n=n, seed=seed, labels=names[low], threshold=threshold)
    assert answer["reference"] == {"source": "labels", "classes": [names[low]]}
    assert answer["retention"] == {names[low]: 0.0} and answer["mean_retention"] == 0.0
    assert answer["score_drop_present"]["mean"] == pytest.approx((scores[0, low] - scores[1:, low]).mean(), abs=1e-5)
    clean_pos = scores[0] >= threshold
    assert answer["clean_correctness"] == {
        "hits": [], "misses": [names[low]],
        "false_positives": [names[c] for c in np.flatnonzero(clean_pos)]}
    others = np.flatnonzero(np.arange(len(names)) != low)
    gained = (scores[1:] >= threshold)[:, others] & ~clean_pos[others]
    assert answer["false_positives"]["mean_per_mask"] == pytest.approx(gained.sum(axis=1).mean(), abs=1e-6)
    assert answer["false_positives"]["mean_score_rise_absent"] == pytest.approx(
        (scores[1:] - scores[0])[:, others].mean(), abs=1e-5)
    assert all(m["lost"] == [names[low]] for m in answer["masks"])


def test_a_clean_image_with_no_predicted_class_says_so(client, store):
    logits, _ = oracle_outputs(store, CLASSIFIER, CLASSIFIER_SIZE, 4, "high", 0)
    assert sigmoid(logits).max() < 1.0  # so nothing reaches a threshold of 1
    answer = robustness(client, model=CLASSIFIER, n=4, threshold=1.0)
    assert answer["reference"] == {"source": "clean_prediction", "classes": []}
    assert "predicts no class" in answer["warning"] and "nothing whose robustness can be measured" in answer["warning"]
    assert answer["retention"] is None and answer["mean_retention"] is None
    assert answer["score_drop_present"] == {"mean": None, "per_class": {}}
    assert answer["jaccard"] is None and all(m["jaccard"] is None for m in answer["masks"])  # not 1.0
    assert answer["false_positives"]["mean_per_mask"] == 0.0 and answer["flips"] == 0
    assert answer["false_positives"]["mean_score_rise_absent"] == pytest.approx(
        (sigmoid(logits[1:]) - sigmoid(logits[0])).mean(), abs=1e-5)


def test_return_masks_adds_the_masked_images(client):
    answer = robustness(client, model=CLASSIFIER, n=2, mask_ratio="b2", return_masks="true")
    for entry in answer["masks"]:
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["png_base64"]))))
        assert image.shape == (128, 128, 3)
        black = np.all(image == 0, axis=2).mean()  # mean = 0: a hole is drawn as black
        assert black >= entry["hole_ratio"] - 1e-9


# ---------------------------------------------------------------- single-label (softmax)


def test_softmax_top1_retention_and_score_drop_equal_a_direct_computation(client, store, class_names):
    n, seed = 8, 5
    probs = softmax(oracle_outputs(store, SOFTMAX_CLASSIFIER, CLASSIFIER_SIZE, n, "high", seed)[0])
    names = class_names[SOFTMAX_CLASSIFIER]
    answer = robustness(client, model=SOFTMAX_CLASSIFIER, n=n, seed=seed)
    top = int(np.argmax(probs[0]))
    masked_top = np.argmax(probs[1:], axis=1)
    assert answer["activation"] == "softmax" and answer["threshold"] is None
    assert answer["clean"]["top1"] == {"name": names[top], "score": pytest.approx(probs[0, top], abs=2e-6)}
    assert [label["name"] for label in answer["clean"]["labels"]] == [names[c] for c in np.argsort(-probs[0])[:5]]
    assert answer["reference"] == {"source": "clean_prediction", "class": names[top],
                                   "score": pytest.approx(probs[0, top], abs=2e-6)}
    assert answer["top1_retention"] == pytest.approx(np.mean(masked_top == top), abs=1e-6)
    drops = probs[0, top] - probs[1:, top]
    assert answer["true_class_score_drop"]["mean"] == pytest.approx(drops.mean(), abs=1e-5)
    assert answer["true_class_score_drop"]["per_mask"] == pytest.approx(drops, abs=1e-5)
    assert answer["top1_changes"] == int((masked_top != top).sum())
    assert [m["top1"]["name"] for m in answer["masks"]] == [names[c] for c in masked_top]
    assert [m["top1"]["score"] for m in answer["masks"]] == pytest.approx(probs[1:].max(axis=1), abs=2e-6)
    assert "retention" not in answer and "clean_correctness" not in answer


def test_softmax_with_a_true_label_judges_that_class(client, store, class_names):
    n, seed = 6, 2
    probs = softmax(oracle_outputs(store, SOFTMAX_CLASSIFIER, CLASSIFIER_SIZE, n, "high", seed)[0])
    names = class_names[SOFTMAX_CLASSIFIER]
    true = int(np.argsort(-probs[0])[1])  # the clean image's second choice: a wrong answer on the clean image
    answer = robustness(client, model=SOFTMAX_CLASSIFIER, n=n, seed=seed, labels=names[true])
    assert answer["reference"]["source"] == "labels" and answer["reference"]["class"] == names[true]
    assert answer["top1_retention"] == pytest.approx(np.mean(np.argmax(probs[1:], axis=1) == true), abs=1e-6)
    assert answer["true_class_score_drop"]["per_mask"] == pytest.approx(probs[0, true] - probs[1:, true], abs=1e-5)
    assert answer["clean_correctness"] == {"correct": False, "true_class_rank": 2}


def test_softmax_with_two_labels_is_422(client):
    detail = error_of(client.post("/robustness", params={"model": SOFTMAX_CLASSIFIER, "labels": "circle,star"},
                                  content=IMAGE, headers=HEADERS), 422, "invalid_parameter")
    assert "exactly one" in detail and "softmax" in detail


# ---------------------------------------------------------------- segmenters


def iou(ref: np.ndarray, pred: np.ndarray, c: int) -> float:
    return ((ref == c) & (pred == c)).sum() / ((ref == c) | (pred == c)).sum()


def test_segmenter_per_class_iou_and_foreground_miou_equal_a_direct_computation(client, store, class_names):
    n, seed = 4, 1
    answer = robustness(client, model=SEGMENTER, mask_ratio="b5", n=n, seed=seed)
    assert answer["task"] == "segmentation" and answer["threshold"] is None
    logits, holes = oracle_outputs(store, SEGMENTER, SEGMENTER_SIZE, n, "b5", seed)
    maps = np.argmax(logits, axis=1)
    clean, masked = maps[0], maps[1:]
    names = class_names[SEGMENTER]
    present = np.unique(clean)
    foreground = present[present != 0]
    pooled_ref = np.broadcast_to(clean, masked.shape)
    assert answer["per_class_iou"] == pytest.approx({names[c]: iou(pooled_ref, masked, c) for c in present}, abs=1e-6)
    if foreground.size:
        assert answer["warning"] is None
        assert answer["miou_foreground"] == pytest.approx(
            np.mean([iou(pooled_ref, masked, c) for c in foreground]), abs=1e-6)
    else:
        assert answer["miou_foreground"] is None and "only background" in answer["warning"]
    inside = [iou(pooled_ref[holes], masked[holes], c) for c in foreground if (pooled_ref[holes] == c).any()
              or (masked[holes] == c).any()]
    assert answer["inside_holes"]["miou_foreground"] == (pytest.approx(np.mean(inside), abs=1e-6) if inside else None)
    assert answer["inside_holes"]["pixel_agreement"] == pytest.approx((pooled_ref == masked)[holes].mean(), abs=1e-6)
    assert answer["outside_holes"]["pixel_agreement"] == pytest.approx((pooled_ref == masked)[~holes].mean(),
                                                                       abs=1e-6)
    for entry, hole, pred in zip(answer["masks"], holes, masked, strict=True):
        assert entry["changed_pixels"] == int((pred != clean).sum())
        if foreground.size:
            assert entry["miou_foreground"] == pytest.approx(np.mean([iou(clean, pred, c) for c in foreground]),
                                                             abs=1e-6)
        inside = [iou(clean[hole], pred[hole], c) for c in foreground
                  if (clean[hole] == c).any() or (pred[hole] == c).any()]
        assert entry["miou_foreground_inside"] == (pytest.approx(np.mean(inside), abs=1e-6) if inside else None)
    assert "miou" not in answer and "truth" not in answer


def segment_with_truth(client, image: bytes, truth: bytes, **params):
    return client.post("/robustness", params={"model": SEGMENTER, **params},
                       files={"file": ("image.png", image), "truth": ("truth.png", truth)})


def truth_oracle(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> tuple[float, float, dict[int, float]]:
    """Pixel accuracy, mIoU (classes in either map, background included) and IoU per class, void left out."""
    valid = truth != 255
    t, p = truth[valid], pred[valid]
    ious = {c: iou(t, p, c) for c in range(num_classes) if ((t == c) | (p == c)).any()}
    return float((t == p).mean()), float(np.mean(list(ious.values()))), ious


def test_segmenter_truth_gives_accuracy_and_miou_against_it(client, store, class_names):
    n, seed = 3, 4
    names = class_names[SEGMENTER]
    image = png_bytes(random_rgb(SEGMENTER_SIZE, SEGMENTER_SIZE, seed=22))  # the model's size: no resizing
    rng = np.random.default_rng(0)
    truth = rng.integers(0, len(names), size=(SEGMENTER_SIZE, SEGMENTER_SIZE)).astype(np.uint8)
    truth[:8] = 255  # void rows
    response = segment_with_truth(client, image, png_bytes(truth), mask_ratio="b4", n=n, seed=seed)
    assert response.status_code == 200, response.text
    answer = response.json()
    logits, _ = oracle_outputs(store, SEGMENTER, SEGMENTER_SIZE, n, "b4", seed, image)
    maps = np.argmax(logits, axis=1)
    accuracy, miou, ious = truth_oracle(truth, maps[0], len(names))
    got = answer["truth"]
    assert got["void_fraction"] == pytest.approx(8 / SEGMENTER_SIZE, abs=1e-6)
    assert got["clean"]["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert got["clean"]["miou"] == pytest.approx(miou, abs=1e-6)
    assert {k: v for k, v in got["clean"]["per_class_iou"].items() if v is not None} == pytest.approx(
        {names[c]: v for c, v in ious.items()}, abs=1e-6)
    masked = [truth_oracle(truth, m, len(names)) for m in maps[1:]]
    assert got["masked"]["pixel_accuracy"] == pytest.approx(np.mean([m[0] for m in masked]), abs=1e-6)
    assert got["masked"]["miou"] == pytest.approx(np.mean([m[1] for m in masked]), abs=1e-6)
    for entry, (acc, mi, _) in zip(answer["masks"], masked, strict=True):
        assert entry["truth"] == {"pixel_accuracy": pytest.approx(acc, abs=1e-6), "miou": pytest.approx(mi, abs=1e-6)}


def test_segmenter_truth_is_resized_nearest_to_the_model_map(client, store, class_names):
    """A 2x-size palette truth made of 2x2 blocks: the nearest resize to the model's map is truth[::2, ::2]."""
    names = class_names[SEGMENTER]
    size = 2 * SEGMENTER_SIZE
    image = png_bytes(random_rgb(size, size, seed=23))
    small = np.random.default_rng(1).integers(0, len(names), size=(SEGMENTER_SIZE, SEGMENTER_SIZE)).astype(np.uint8)
    palette = Image.fromarray(np.kron(small, np.ones((2, 2), dtype=np.uint8)), mode="L").convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    response = segment_with_truth(client, image, buffer.getvalue(), mask_ratio="b2", n=1, seed=0)
    assert response.status_code == 200, response.text
    logits, _ = oracle_outputs(store, SEGMENTER, SEGMENTER_SIZE, 1, "b2", 0, image)
    accuracy, miou, _ = truth_oracle(small, np.argmax(logits[0], axis=0), len(names))
    assert response.json()["truth"]["clean"]["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert response.json()["truth"]["clean"]["miou"] == pytest.approx(miou, abs=1e-6)


def test_truth_errors(client, class_names):
    image = png_bytes(random_rgb(SEGMENTER_SIZE, SEGMENTER_SIZE, seed=24))
    num_classes = len(class_names[SEGMENTER])
    labels = np.zeros((SEGMENTER_SIZE, SEGMENTER_SIZE), dtype=np.uint8)
    labels[0, 0], labels[1, 1] = num_classes, 255  # one class id past the model's; 255 (void) is fine
    detail = error_of(segment_with_truth(client, image, png_bytes(labels)), 422, "invalid_truth")
    assert f"[{num_classes}]" in detail and f"0..{num_classes - 1}" in detail
    rgb = png_bytes(np.zeros((SEGMENTER_SIZE, SEGMENTER_SIZE, 3), dtype=np.uint8))
    assert "mode RGB" in error_of(segment_with_truth(client, image, rgb), 422, "invalid_truth")
    smaller = png_bytes(np.zeros((SEGMENTER_SIZE, SEGMENTER_SIZE // 2), dtype=np.uint8))
    assert "32x64" in error_of(segment_with_truth(client, image, smaller), 422, "invalid_truth")
    error_of(segment_with_truth(client, image, b"not a png at all"), 400, "invalid_truth")
    classifier = client.post("/robustness", params={"model": CLASSIFIER},
                             files={"file": ("image.png", image), "truth": ("truth.png", png_bytes(labels))})
    assert "segmentation models only" in error_of(classifier, 400, "truth_not_supported")
    text = client.post("/robustness", params={"model": SEGMENTER}, files={"file": ("image.png", image)},
                       data={"truth": "0,1,2"})
    error_of(text, 400, "invalid_field")


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize(("params", "fragment"), [
    ({"n": 65}, "<= 64"),
    ({"n": 0}, ">= 1"),
    ({"mask_ratio": "huge"}, "low|medium|high|b1..b6|a-b"),
    ({"mask_ratio": "0.7-0.2"}, "empty"),
    ({"labels": "circle,unicorn"}, "unicorn"),
    ({"threshold": 1.5}, "<= 1"),
])
def test_bad_parameters_are_422_with_what_is_allowed(client, params, fragment):
    response = client.post("/robustness", params={"model": CLASSIFIER, **params}, content=IMAGE, headers=HEADERS)
    assert fragment in error_of(response, 422, "invalid_parameter")


def test_unknown_label_lists_the_class_names(client):
    response = client.post("/robustness", params={"labels": "unicorn"}, content=IMAGE, headers=HEADERS)
    assert "circle" in response.json()["detail"] and "moon" in response.json()["detail"]


def test_labels_on_a_segmenter_are_400(client):
    response = client.post("/robustness", params={"model": SEGMENTER, "labels": "x"}, content=IMAGE, headers=HEADERS)
    assert response.status_code == 400 and response.json()["error"] == "labels_not_supported"


# ---------------------------------------------------------------- bounded work (issue 12)


def timed_post(client, params: dict) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = client.post("/robustness", params=params, content=IMAGE, headers=HEADERS)
    return response, time.perf_counter() - start


def test_a_20000_digit_mask_ratio_is_refused_at_once(client):
    """It took 7.9 s and held the event loop: the old range pattern backtracked. Now the URI limit answers."""
    response, seconds = timed_post(client, {"model": CLASSIFIER, "mask_ratio": "1" * 20_000 + "x"})
    assert seconds < 1.0
    detail = error_of(response, 414, "uri_too_long")
    assert "the limit is 8,192 bytes" in detail and "1111" not in detail


@pytest.mark.parametrize("spec", ["1" * 33 + "x", "0." + "1" * 7_000 + "-0.5"])
def test_a_mask_ratio_over_32_characters_is_422(client, spec):
    response, seconds = timed_post(client, {"model": CLASSIFIER, "mask_ratio": spec})
    assert seconds < 1.0
    detail = error_of(response, 422, "invalid_parameter")
    assert detail.startswith("mask_ratio:") and "at most 32 characters" in detail


def test_a_range_with_one_possible_mask_and_n_64_is_422_within_a_bound(client):
    """It took 12.8 s: each of the 64 masks was redrawn 20 times. Only the full mask lies in (0.99999, 1]."""
    response, seconds = timed_post(client, {"model": CLASSIFIER, "mask_ratio": "0.99999-1", "n": 64})
    assert seconds < 3.0
    detail = error_of(response, 422, "invalid_parameter")
    assert detail.startswith("mask_ratio: mask ratio range (0.99999, 1.0] admits only 1 distinct")
    assert f"{CLASSIFIER_SIZE}x{CLASSIFIER_SIZE}" in detail and "fewer than the 64 requested" in detail
    assert "widen the range or ask for at most 1" in detail
    one = robustness(client, model=CLASSIFIER, mask_ratio="0.99999-1", n=1)  # the one mask there is
    assert [m["hole_ratio"] for m in one["masks"]] == [1.0]


def test_an_unreachable_range_is_422_naming_the_size(client):
    # 1/128² = 6.1e-5: no hole count of a 128x128 mask lies in (0.5, 0.50005].
    detail = error_of(timed_post(client, {"model": CLASSIFIER, "mask_ratio": "0.5-0.50005"})[0], 422,
                      "invalid_parameter")
    assert f"unreachable for a {CLASSIFIER_SIZE}x{CLASSIFIER_SIZE} mask" in detail and "(0.5, 0.50005]" in detail


def test_very_long_labels_and_model_names_are_422(client):
    detail = error_of(timed_post(client, {"model": CLASSIFIER, "labels": ",".join(["circle"] * 700)})[0], 422,
                      "invalid_parameter")
    assert detail.startswith("labels:") and "at most 4096 characters" in detail
    detail = error_of(timed_post(client, {"model": "m" * 65})[0], 422, "invalid_parameter")
    assert detail.startswith("model:") and "at most 64 characters" in detail
    detail = error_of(timed_post(client, {"model": "m" * 64})[0], 404, "unknown_model")  # a name that could exist
    assert CLASSIFIER in detail


def test_health_answers_while_a_long_robustness_request_runs(client, server):
    """Mask drawing runs off the event loop: /health answers while a 64-mask near-full request is working."""
    slow: dict[str, httpx.Response] = {}

    def post() -> None:
        with server.client() as other:
            slow["response"] = other.post("/robustness", params={"model": CLASSIFIER, "mask_ratio": "0.999-1", "n": 64,
                                                                 "return_masks": "true"},
                                          content=IMAGE, headers=HEADERS)

    worker = threading.Thread(target=post)
    worker.start()
    try:
        time.sleep(0.3)
        start = time.perf_counter()
        health = client.get("/health")
        seconds = time.perf_counter() - start
        in_flight = worker.is_alive()
    finally:
        worker.join(30)
    assert health.status_code == 200 and seconds < 1.0
    assert in_flight, "the slow request finished before /health was asked: the test proves nothing"
    assert slow["response"].status_code == 200, slow["response"].text
