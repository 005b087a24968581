"""A segmenter's report against a direct ONNX Runtime run scored by SegmentationMetrics at the maps' resolution."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from robustness.masks import resize_mask
from robustness.metrics import SegmentationMetrics
from tests.robustness.evaluation.conftest import (
    SEGMENTATION_DATA,
    SEGMENTER,
    SEGMENTER_IMAGES,
    direct_inputs,
    direct_outputs,
    manifest_of,
)


@pytest.fixture(scope="module")
def ids() -> list[str]:
    lines = (SEGMENTATION_DATA / "ImageSets" / "Segmentation" / "test.txt").read_text().split()
    return lines[:SEGMENTER_IMAGES]


def label_map(folder: str, image_id: str) -> np.ndarray:
    return np.array(Image.open(SEGMENTATION_DATA / folder / f"{image_id}.png"))


def test_clean_condition_equals_a_direct_onnx_run(segmenter_report, ids):
    m = manifest_of(SEGMENTER)
    size = tuple(m["input"]["size"])
    inputs = np.stack([direct_inputs(SEGMENTATION_DATA / "JPEGImages" / f"{i}.jpg", size, m["input"]["mean"],
                                     m["input"]["std"]) for i in ids])
    logits = direct_outputs(SEGMENTER, inputs)
    metrics = SegmentationMetrics(len(m["class_names"]))
    for image_id, out in zip(ids, logits, strict=True):
        gt = label_map("SegmentationClass", image_id)
        pred = Image.fromarray(out.argmax(0).astype(np.uint8)).resize(gt.shape[::-1], Image.NEAREST)
        metrics.update(np.asarray(pred), gt, label_map("SegmentationObject", image_id))
    expected = metrics.compute()
    cell = segmenter_report["results"]["demo-segmenter"]["clean"]
    for name in ("mIoU", "IA-mIoU", "IA_S", "IA_M", "IA_L"):
        value = cell["metrics"][name]["value"]
        if np.isnan(expected[name]):
            assert value is None
        else:
            assert value == pytest.approx(100 * expected[name], abs=1e-9), name
            low, high = cell["metrics"][name]["ci"]
            assert low <= high
    for c, name in enumerate(m["class_names"]):
        value = cell["per_class"]["IoU"][name]["value"]
        assert (value is None) if np.isnan(expected["IoU_per_class"][c]) else (
            value == pytest.approx(100 * expected["IoU_per_class"][c], abs=1e-9))


def test_comparing_a_segmenter_with_itself_differs_by_exactly_zero(segmenter_report):
    comparison, = segmenter_report["comparisons"]
    for cell in comparison["conditions"].values():
        for f in cell.values():
            assert f["value"] in (0.0, None) and f["ci"] in ([0.0, 0.0], [None, None])
    assert comparison["conditions"]["clean"]["mIoU"] == {"value": 0.0, "ci": [0.0, 0.0]}


def test_segmenter_checks_count_every_present_object(segmenter_report, ids):
    size = tuple(manifest_of(SEGMENTER)["input"]["size"])
    expected = 0
    for image_id in ids:
        present = set(np.unique(resize_mask(label_map("SegmentationClass", image_id), *size)).tolist())
        expected += len(present - {0, 255})
    checks = segmenter_report["checks"]["demo-segmenter"]
    assert checks["direction"]["tested"] == expected > 0
    assert checks["invariance"]["tested"] == len(ids)
    assert 0 <= checks["invariance"]["passed"] <= len(ids)


def test_segmenter_summary_uses_the_headline_metrics(segmenter_report):
    summary = segmenter_report["summary"]["demo-segmenter"]
    assert set(summary) == {"mIoU", "IA-mIoU", "IA_S"}
    cells = segmenter_report["results"]["demo-segmenter"]
    assert summary["mIoU"]["mPC"]["value"] == cells["corruption/contrast/2"]["metrics"]["mIoU"]["value"]
    assert summary["mIoU"]["falls_monotonically"] is None  # one severity: no trend
