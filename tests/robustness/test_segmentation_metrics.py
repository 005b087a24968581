"""mIoU and IA-mIoU (the L_sb paper): toy cases, void handling, streaming, a brute-force oracle, bad input."""

import math
from collections import defaultdict

import numpy as np
import pytest
from scipy import ndimage

from robustness.metrics import SegmentationMetrics

VOID = 255


def _scene(h=60, w=100):
    return np.zeros((h, w), dtype=np.int64), np.zeros((h, w), dtype=np.int64)


def _place(gt_class, gt_instance, rows, cols, cls, instance_id):
    gt_class[rows, cols] = cls
    gt_instance[rows, cols] = instance_id


def _single(pred, gt_class, gt_instance, num_classes=3):
    metrics = SegmentationMetrics(num_classes)
    metrics.update(pred, gt_class, gt_instance)
    return metrics.compute()


# ------------------------------------------------------ the L_sb paper's toy cases


def test_perfect_prediction_scores_one_everywhere():
    gt_class, gt_instance = _scene()
    _place(gt_class, gt_instance, slice(5, 25), slice(5, 25), 1, 1)
    _place(gt_class, gt_instance, slice(20, 60), slice(50, 90), 2, 2)  # 1600 px: M
    _place(gt_class, gt_instance, slice(40, 45), slice(5, 10), 1, 3)
    result = _single(gt_class.copy(), gt_class, gt_instance)
    assert result["mIoU"] == 1.0
    assert result["IA-mIoU"] == 1.0
    assert result["IA_S"] == 1.0 and result["IA_M"] == 1.0
    assert math.isnan(result["IA_L"])  # no instance of 96^2 pixels or more
    assert result["counts_per_class"].tolist() == [1, 2, 1]


def test_separate_false_positive_blob_leaves_the_instance_iou_at_one():
    gt_class, gt_instance = _scene()
    _place(gt_class, gt_instance, slice(5, 25), slice(5, 25), 1, 1)  # 400 px
    pred = gt_class.copy()
    pred[40:50, 60:70] = 1  # 100 px of class 1, far from the instance
    result = _single(pred, gt_class, gt_instance)
    assert result["IA_IoU_per_class"][1] == 1.0
    assert result["IoU_per_class"][1] == pytest.approx(400 / 500)  # ordinary IoU pays for it


def test_false_positive_touching_an_instance_is_charged_in_full():
    gt_class, gt_instance = _scene()
    _place(gt_class, gt_instance, slice(5, 25), slice(5, 25), 1, 1)  # 400 px
    pred = gt_class.copy()
    pred[5:25, 25:35] = 1  # 200 px glued to the right side: one blob of 600 px
    result = _single(pred, gt_class, gt_instance)
    assert result["IA_IoU_per_class"][1] == pytest.approx(2 / 3, abs=1e-12)
    n = 60 * 100
    assert result["IoU_per_class"][0] == pytest.approx((n - 600) / (n - 400))
    assert result["IA_IoU_per_class"][0] == pytest.approx((n - 600) / (n - 400))  # one image


def test_missed_small_instance_gives_ia_s_zero():
    gt_class, gt_instance = _scene(120, 120)
    _place(gt_class, gt_instance, slice(5, 15), slice(5, 15), 1, 1)  # 100 px: S
    _place(gt_class, gt_instance, slice(20, 60), slice(20, 60), 1, 2)  # 1600 px: M
    _place(gt_class, gt_instance, slice(0, 100), slice(100, 120), 2, 3)  # 2000 px: M
    pred = gt_class.copy()
    pred[5:15, 5:15] = 0
    result = _single(pred, gt_class, gt_instance)
    assert result["IA_S"] == 0.0
    assert result["IA_M"] == 1.0
    assert result["IA_S_per_class"][1] == 0.0 and np.isnan(result["IA_S_per_class"][2])
    assert result["IA_IoU_per_class"][1] == 0.5


def test_blob_bridging_two_same_class_instances_charges_the_bridge_pro_rata():
    gt_class, gt_instance = _scene()
    _place(gt_class, gt_instance, slice(10, 30), slice(0, 20), 1, 1)  # A: 400 px
    _place(gt_class, gt_instance, slice(10, 30), slice(40, 80), 1, 2)  # B: 800 px
    pred = gt_class.copy()
    pred[10:30, 20:40] = 1  # 400-px bridge on background: one blob of 1600 px
    # A: I=400, O=800, R=400 -> p = 400 + floor(400*400/1200) = 533 -> IoU = 400/533
    # B: I=800, O=400, R=400 -> p = 800 + floor(400*800/1200) = 1066 -> IoU = 800/1066
    # The definition's 0.75 is the value before flooring (400 / (400 + 133.33...)); the floor moves it by 5e-4.
    metrics = SegmentationMetrics(3)
    metrics.update(pred, gt_class, gt_instance)
    assert metrics.compute()["IA_IoU_per_class"][1] == pytest.approx((400 / 533 + 800 / 1066) / 2, abs=1e-12)
    for keep in (1, 2):
        # Evaluate one instance alone: the other stays class-1 ground truth but is no instance.
        single = SegmentationMetrics(3)
        single.update(pred, gt_class, np.where(gt_instance == keep, keep, 0))
        value = single.compute()["IA_IoU_per_class"][1]
        assert value == pytest.approx(400 / 533 if keep == 1 else 800 / 1066, abs=1e-12)
        assert value == pytest.approx(0.75, abs=1e-3)


# ---------------------------------------------------------------- void, ids, streaming


def test_void_pixels_count_nowhere_but_do_not_break_blobs():
    gt_class, gt_instance = _scene()
    _place(gt_class, gt_instance, slice(10, 30), slice(10, 30), 1, 1)  # 400 px
    ring = np.zeros_like(gt_class, dtype=bool)
    ring[9:31, 9:31] = True
    ring[10:30, 10:30] = False
    gt_class[ring] = VOID
    gt_instance[ring] = VOID
    pred = np.zeros_like(gt_class)
    pred[9:31, 9:31] = 1  # instance + void ring: the ring is not counted
    assert _single(pred, gt_class, gt_instance)["IA_IoU_per_class"][1] == 1.0
    pred[9:31, 31:32] = 1  # 22 px beyond the ring, connected to the blob through void pixels
    result = _single(pred, gt_class, gt_instance)
    assert result["IA_IoU_per_class"][1] == pytest.approx(400 / 422)
    assert result["IoU_per_class"][1] == pytest.approx(400 / 422)


def test_non_contiguous_ids_and_void_only_instances_do_not_poison_a_class():
    gt_class, gt_instance = _scene()
    _place(gt_class, gt_instance, slice(5, 25), slice(5, 25), 1, 3)
    _place(gt_class, gt_instance, slice(30, 40), slice(50, 60), 2, 117)
    gt_instance[50:55, 80:90] = 42  # an instance lying wholly in void
    gt_class[50:55, 80:90] = VOID
    gt_instance[0:2, 0:2] = 250  # an instance whose class map is void
    gt_class[0:2, 0:2] = VOID
    pred = gt_class.copy()
    pred[pred == VOID] = 0
    pred[30:35, 50:60] = 0  # half of instance 117 missed
    result = _single(pred, gt_class, gt_instance)
    assert result["counts_per_class"].tolist() == [1, 1, 1]
    # Background: 6000 px - 54 void - 500 instance = 5446 gt, plus the 50 missed px predicted as background.
    assert result["IA_IoU_per_class"].tolist() == [pytest.approx(5446 / 5496), 1.0, 0.5]
    assert not np.isnan(result["IA-mIoU"])
    relabelled = np.select([gt_instance == 3, gt_instance == 117], [1, 2], default=gt_instance)
    again = _single(pred, gt_class, relabelled)
    assert again["IA_IoU_per_class"].tolist() == result["IA_IoU_per_class"].tolist()


def test_streaming_averages_instances_over_the_dataset_and_background_over_images():
    metrics = SegmentationMetrics(2)
    gt_class, gt_instance = _scene(40, 40)
    _place(gt_class, gt_instance, slice(0, 20), slice(0, 20), 1, 1)
    metrics.update(gt_class.copy(), gt_class, gt_instance)  # image 1: perfect
    pred = gt_class.copy()
    pred[0:20, 20:30] = 1
    metrics.update(pred, gt_class, gt_instance)  # image 2: instance 2/3, background 1000/1200
    gt2_class, gt2_instance = _scene(40, 40)
    _place(gt2_class, gt2_instance, slice(0, 10), slice(0, 10), 1, 5)
    _place(gt2_class, gt2_instance, slice(20, 30), slice(20, 30), 1, 6)
    pred2 = gt2_class.copy()
    pred2[20:30, 20:30] = 0
    metrics.update(pred2, gt2_class, gt2_instance)  # image 3: instances 1.0 and 0.0
    result = metrics.compute()
    assert result["images"] == 3
    assert result["counts_per_class"].tolist() == [3, 4]
    assert result["IA_IoU_per_class"][1] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert result["IA_IoU_per_class"][0] == pytest.approx((1 + 1000 / 1200 + 1400 / 1500) / 3)
    assert result["IA-mIoU"] == pytest.approx(np.mean(result["IA_IoU_per_class"]))
    # Ordinary mIoU pools pixels over the whole dataset.
    tp1, fp1, fn1 = 400 + 400 + 100, 200, 100
    tp0, fp0, fn0 = 1200 + 1000 + 1400, 100, 200
    assert result["IoU_per_class"][1] == pytest.approx(tp1 / (tp1 + fp1 + fn1))
    assert result["IoU_per_class"][0] == pytest.approx(tp0 / (tp0 + fp0 + fn0))
    metrics.reset()
    with pytest.raises(ValueError, match="before any update"):
        metrics.compute()


def test_predicted_void_counts_as_a_miss():
    gt_class, gt_instance = _scene(20, 20)
    _place(gt_class, gt_instance, slice(0, 10), slice(0, 10), 1, 1)
    pred = gt_class.copy()
    pred[0:5, 0:10] = VOID
    result = _single(pred, gt_class, gt_instance, num_classes=2)
    assert result["IoU_per_class"][1] == 0.5
    assert result["IA_IoU_per_class"][1] == 0.5


def test_large_instance_lands_in_ia_l():
    gt_class, gt_instance = _scene(100, 100)
    _place(gt_class, gt_instance, slice(0, 100), slice(0, 97), 1, 1)  # 9700 px
    result = _single(gt_class.copy(), gt_class, gt_instance, num_classes=2)
    assert result["IA_L"] == 1.0 and np.isnan(result["IA_S"]) and np.isnan(result["IA_M"])


# ---------------------------------------------------------------- brute-force oracle


def _oracle(samples, num_classes):
    """The L_sb paper's IA-mIoU written as plain loops, one instance and one blob at a time."""
    per_class = defaultdict(list)
    for pred, gt_class, gt_instance in samples:
        valid = (gt_class != VOID) & (gt_instance != VOID)
        gt_bg = (gt_class == 0) & valid
        if gt_bg.any():
            pred_bg = (pred == 0) & valid
            per_class[0].append((gt_bg & pred_bg).sum() / (gt_bg | pred_bg).sum())
        for k in np.unique(gt_instance[valid & (gt_instance != 0)]):
            g = (gt_instance == k) & valid
            c = int(np.bincount(gt_class[g], minlength=num_classes).argmax())
            if c == 0:
                continue
            blobs, n = ndimage.label(pred == c, structure=np.ones((3, 3)))
            others = (gt_class == c) & valid & ~g
            sum_i = sum_p = 0
            for b in range(1, n + 1):
                blob = (blobs == b) & valid
                i = int((blob & g).sum())
                if i == 0:
                    continue
                o = int((blob & others).sum())
                r = int(blob.sum()) - i - o
                sum_i += i
                sum_p += int(blob.sum()) if o == 0 else i + math.floor(r * i / (i + o))
            per_class[c].append(sum_i / (sum_p + g.sum() - sum_i))
    return np.array([np.mean(per_class[c]) if per_class[c] else np.nan for c in range(num_classes)])


def _random_sample(rng, h=48, w=64, num_classes=4):
    gt_class, gt_instance = _scene(h, w)
    ids = rng.choice(np.arange(1, 255), size=6, replace=False)
    for k in ids:
        r0, c0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        rr, cc = rng.integers(2, 18), rng.integers(2, 24)
        _place(gt_class, gt_instance, slice(r0, r0 + rr), slice(c0, c0 + cc), rng.integers(1, num_classes), k)
    edges = ndimage.binary_dilation(gt_instance > 0) & ~ndimage.binary_erosion(gt_instance > 0)
    void = edges & (rng.random((h, w)) < 0.5)
    gt_class[void] = VOID
    gt_instance[void] = VOID
    pred = np.where(gt_class == VOID, 0, gt_class)
    for _ in range(5):
        r0, c0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        pred[r0 : r0 + rng.integers(1, 12), c0 : c0 + rng.integers(1, 16)] = rng.integers(0, num_classes)
    noise = rng.random((h, w)) < 0.05
    pred[noise] = rng.integers(0, num_classes, size=noise.sum())
    return pred, gt_class, gt_instance


def test_streaming_result_matches_a_brute_force_oracle_on_random_scenes():
    rng = np.random.default_rng(7)
    samples = [_random_sample(rng) for _ in range(12)]
    metrics = SegmentationMetrics(4)
    for sample in samples:
        metrics.update(*sample)
    result = metrics.compute()
    expected = _oracle(samples, 4)
    np.testing.assert_allclose(result["IA_IoU_per_class"], expected, rtol=0, atol=1e-12)
    assert result["IA-mIoU"] == pytest.approx(np.nanmean(expected), abs=1e-12)
    # Ordinary per-class IoU from pooled pixel counts.
    for c in range(4):
        tp = fp = fn = 0
        for pred, gt_class, gt_instance in samples:
            valid = (gt_class != VOID) & (gt_instance != VOID)
            tp += ((pred == c) & (gt_class == c) & valid).sum()
            fp += ((pred == c) & (gt_class != c) & valid).sum()
            fn += ((pred != c) & (gt_class == c) & valid).sum()
        assert result["IoU_per_class"][c] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("pred", "gt_class", "gt_instance", "message"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), np.zeros((4, 4), int), "must have the same shape"),
        (np.zeros((4, 4), int), np.full((4, 4), 3), np.zeros((4, 4), int), r"gt_class holds labels \[3\]"),
        (np.full((4, 4), 7), np.zeros((4, 4), int), np.zeros((4, 4), int), r"pred holds labels \[7\]"),
        (np.zeros((4, 4), int), np.full((4, 4), -1), np.zeros((4, 4), int), "negative label -1"),
        (np.zeros((4, 4)), np.zeros((4, 4), int), np.zeros((4, 4), int), "pred has dtype float64"),
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), "expected a 2-D"),
    ],
)
def test_bad_maps_raise_value_error(pred, gt_class, gt_instance, message):
    with pytest.raises(ValueError, match=message):
        SegmentationMetrics(3).update(pred, gt_class, gt_instance)


def test_bad_constructor_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_classes=0"):
        SegmentationMetrics(0)
    with pytest.raises(ValueError, match=r"background class 5 must lie in \[0, 3\)"):
        SegmentationMetrics(3, background=5)
