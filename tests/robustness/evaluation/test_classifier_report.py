"""A multi-label classifier's report against independent oracles: a plain ONNX Runtime run, multilabel_metrics,
scikit-learn's AP, a hand-written ECE; paired comparisons; summaries; behavioural checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score

from common.datasets import evaluation_set
from robustness.corruptions import corrupt
from robustness.evaluation import EvaluationConfig, EvaluationError, evaluate, open_model
from robustness.evaluation.conditions import derived_seed
from robustness.masks import BUCKETS, masks, resize_mask
from robustness.metrics import multilabel_metrics
from tests.robustness.evaluation.conftest import (
    CLASSIFICATION_DATA,
    CLASSIFIER,
    CLASSIFIER_IMAGES,
    SEGMENTER,
    copy_entry,
    direct_inputs,
    direct_outputs,
    manifest_of,
)

SEVEN = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")


@pytest.fixture(scope="module")
def truth():
    """Image paths and ternary targets of the first test images, read from test.json directly."""
    records = json.loads((CLASSIFICATION_DATA / "test.json").read_text())[:CLASSIFIER_IMAGES]
    return [CLASSIFICATION_DATA / r["img_path"] for r in records], np.array([r["target"] for r in records])


@pytest.fixture(scope="module")
def spec():
    m = manifest_of(CLASSIFIER)
    return tuple(m["input"]["size"]), m["input"]["mean"], m["input"]["std"], m["threshold"]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def ece_oracle(scores: np.ndarray, targets: np.ndarray) -> float:
    """Percent ECE, written as a plain loop over the 15 bins of the non-ignored (image, class) decisions."""
    keep = targets != 0
    s, y = scores[keep], targets[keep] == 1
    total = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        in_bin = (s >= low) & ((s < high) if b < 14 else (s <= 1.0))
        if in_bin.any():
            total += in_bin.sum() / s.size * abs(y[in_bin].mean() - s[in_bin].mean())
    return 100.0 * total


def check_condition(report: dict, key: str, scores: np.ndarray, targets: np.ndarray, threshold: float) -> None:
    cell = report["results"]["demo-classifier"][key]
    expected = multilabel_metrics(scores, targets, threshold)
    for name in SEVEN:
        assert cell["metrics"][name]["value"] == pytest.approx(expected[name], abs=1e-6), (key, name)
    assert cell["metrics"]["ECE"]["value"] == pytest.approx(ece_oracle(scores, targets), abs=1e-5)
    names = report["dataset"]["class_names"]
    for c, name in enumerate(names):
        keep = targets[:, c] != 0
        positives = targets[keep, c] == 1
        ap = cell["per_class"]["AP"][name]["value"]
        if positives.any():
            assert ap == pytest.approx(100 * average_precision_score(positives, scores[keep, c]), abs=1e-6), name
        else:
            assert ap is None


def test_clean_condition_equals_a_direct_onnx_run(classifier_report, truth, spec):
    paths, targets = truth
    size, mean, std, threshold = spec
    scores = sigmoid(direct_outputs(CLASSIFIER, np.stack([direct_inputs(p, size, mean, std) for p in paths])))
    check_condition(classifier_report, "clean", scores, targets, threshold)


def test_occluded_and_corrupted_conditions_equal_the_perturbations_applied_by_hand(classifier_report, truth, spec):
    paths, targets = truth
    size, mean, std, threshold = spec
    occluded, noisy = [], []
    for i, path in enumerate(paths):
        clean = direct_inputs(path, size, mean, std)
        hole = masks(1, *size, BUCKETS["b6"], derived_seed(3, i, "occlusion/b6"))[0]
        occluded.append(np.where(hole, np.float32(0), clean))
        with Image.open(path) as image:
            resized = np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))
        pixels = corrupt(resized, "gaussian_noise", 5, derived_seed(3, i, "corruption/gaussian_noise/5"))
        noisy.append(((pixels / 255.0 - np.asarray(mean)) / np.asarray(std)).transpose(2, 0, 1).astype(np.float32))
    check_condition(classifier_report, "occlusion/b6", sigmoid(direct_outputs(CLASSIFIER, np.stack(occluded))),
                    targets, threshold)
    check_condition(classifier_report, "corruption/gaussian_noise/5",
                    sigmoid(direct_outputs(CLASSIFIER, np.stack(noisy))), targets, threshold)


def test_comparing_a_model_with_itself_differs_by_exactly_zero(classifier_report):
    comparison, = classifier_report["comparisons"]
    assert (comparison["model"], comparison["other"]) == ("demo-classifier", "demo-classifier@1")
    figures = [f for cell in comparison["conditions"].values() for f in cell.values()]
    for summary in comparison["summary"].values():
        figures += [summary[k] for k in ("P", "mPC", "rPC", "mPO", "rPO")]
        figures += [f for table in ("per_severity", "per_corruption", "per_bucket") for f in summary[table].values()]
    assert len(figures) > 50
    for f in figures:
        assert f["value"] == 0.0 and f["ci"] == [0.0, 0.0]


def test_bootstrap_intervals_hold_the_point_estimate(classifier_report):
    # mAP only: ECE (a sum of absolute gaps) is biased upwards on resamples, so its percentile interval can sit
    # entirely above the point estimate on small sets; that is a property of the statistic, not a bug.
    for key, cell in classifier_report["results"]["demo-classifier"].items():
        f = cell["metrics"]["mAP"]
        assert f["ci"][0] <= f["value"] <= f["ci"][1], (key, f)


def test_a_rerun_with_the_same_seed_gives_the_same_figures(classifier_set):
    config = EvaluationConfig(("b2",), (), (), seed=7, bootstrap=30, limit=6, checks=False)
    first = evaluate([open_model(CLASSIFIER)], classifier_set, config)
    second = evaluate([open_model(CLASSIFIER)], classifier_set, config)
    assert first["results"] == second["results"] and first["summary"] == second["summary"]
    other_seed = evaluate([open_model(CLASSIFIER)], classifier_set, EvaluationConfig(("b2",), (), (), seed=8,
                                                                                    bootstrap=30, limit=6,
                                                                                    checks=False))
    assert other_seed["results"]["demo-classifier"]["occlusion/b2"] != first["results"]["demo-classifier"][
        "occlusion/b2"]


def test_summary_follows_the_cells(classifier_report):
    cells = classifier_report["results"]["demo-classifier"]
    for metric in ("mAP", "CF1", "OF1", "ECE"):
        s = classifier_report["summary"]["demo-classifier"][metric]
        clean = cells["clean"]["metrics"][metric]["value"]
        s1 = cells["corruption/gaussian_noise/1"]["metrics"][metric]["value"]
        s5 = cells["corruption/gaussian_noise/5"]["metrics"][metric]["value"]
        b6 = cells["occlusion/b6"]["metrics"][metric]["value"]
        assert s["P"]["value"] == clean
        assert s["mPC"]["value"] == pytest.approx((s1 + s5) / 2)
        assert s["per_severity"]["5"]["value"] == pytest.approx(s5)
        assert s["mPO"]["value"] == pytest.approx(b6)
        if clean:
            assert s["rPC"]["value"] == pytest.approx((s1 + s5) / 2 / clean)
            assert s["rPO"]["value"] == pytest.approx(b6 / clean)
        assert s["falls_monotonically"] == (s5 <= s1)


def test_most_affected_classes_are_the_largest_ap_drops(classifier_report):
    cells = classifier_report["results"]["demo-classifier"]
    clean = {k: v["value"] for k, v in cells["clean"]["per_class"]["AP"].items()}
    here = {k: v["value"] for k, v in cells["occlusion/b6"]["per_class"]["AP"].items()}
    drops = sorted(((clean[k] - here[k], k) for k in clean if clean[k] is not None), key=lambda d: -d[0])
    listed = cells["occlusion/b6"]["most_affected"]
    assert [a["drop"]["value"] for a in listed] == pytest.approx([d for d, _ in drops[:5]])


def test_a_different_threshold_changes_the_threshold_metrics_but_not_the_ap(classifier_set, scratch_store, truth,
                                                                            spec):
    lower = copy_entry(CLASSIFIER, scratch_store, "demo-low", threshold=0.3)
    config = EvaluationConfig((), (), (), bootstrap=40, checks=False)
    report = evaluate([open_model(CLASSIFIER), open_model(lower)], classifier_set, config)
    diff = report["comparisons"][0]["conditions"]["clean"]
    assert diff["mAP"] == {"value": 0.0, "ci": [0.0, 0.0]}
    paths, targets = truth
    size, mean, std, _ = spec
    scores = sigmoid(direct_outputs(CLASSIFIER, np.stack([direct_inputs(p, size, mean, std) for p in paths])))
    expected = multilabel_metrics(scores, targets, 0.3)["CF1"] - multilabel_metrics(scores, targets, 0.5)["CF1"]
    assert diff["CF1"]["value"] == pytest.approx(expected, abs=1e-6)
    assert diff["CF1"]["ci"][0] <= diff["CF1"]["value"] <= diff["CF1"]["ci"][1]


def test_checks_count_every_present_object(classifier_report, truth, spec):
    paths, targets = truth
    size = spec[0]
    expected = 0
    for path, target in zip(paths, targets, strict=True):
        gt = np.array(Image.open(CLASSIFICATION_DATA / "SegmentationClass" / f"{path.stem}.png"))
        ids = set(np.unique(resize_mask(gt, *size)).tolist())
        expected += sum(1 for c in np.flatnonzero(target == 1) if c + 1 in ids)
    for label in ("demo-classifier", "demo-classifier@1"):
        checks = classifier_report["checks"][label]
        direction, invariance = checks["direction"], checks["invariance"]
        assert direction["tested"] + direction["untested_empty_clean_prediction"] == expected > 0
        assert invariance["tested"] + invariance["untested_empty_clean_prediction"] == len(paths)
        assert direction["tested"] > 0 and invariance["tested"] > 0
        for check in checks.values():
            assert check["status"] == "ok" and 0 <= check["passed"] <= check["tested"]
    assert classifier_report["checks"]["demo-classifier"] == classifier_report["checks"]["demo-classifier@1"]


def test_a_model_that_predicts_nothing_is_not_credited_with_passing_checks(classifier_set, scratch_store, truth):
    """A threshold no sigmoid score reaches: every clean answer is empty, so no check is passed by it."""
    silent = copy_entry(CLASSIFIER, scratch_store, "demo-silent", threshold=1.0)
    report = evaluate([open_model(silent)], classifier_set, EvaluationConfig((), (), (), bootstrap=10))
    for check in report["checks"]["demo-silent"].values():
        assert (check["tested"], check["passed"], check["pass_rate"]) == (0, 0, None)
        assert check["untested_empty_clean_prediction"] > 0
    assert report["checks"]["demo-silent"]["invariance"]["untested_empty_clean_prediction"] == len(truth[0])


def test_checks_are_skipped_without_ground_truth_maps(tmp_path):
    records = json.loads((CLASSIFICATION_DATA / "test.json").read_text())[:3]
    (tmp_path / "JPEGImages").mkdir()
    for r in records:
        (tmp_path / r["img_path"]).write_bytes((CLASSIFICATION_DATA / r["img_path"]).read_bytes())
    for split in ("train", "test"):
        (tmp_path / f"{split}.json").write_text(json.dumps(records))
    (tmp_path / "dataset.json").write_text(json.dumps({"classes": manifest_of(CLASSIFIER)["class_names"]}))
    report = evaluate([open_model(CLASSIFIER)], evaluation_set(tmp_path, "classification"),
                      EvaluationConfig((), (), (), bootstrap=10))
    for check in report["checks"]["demo-classifier"].values():
        assert (check["status"], check["tested"], check["passed"]) == ("skipped: needs ground-truth maps", 0, 0)


def test_incompatible_models_are_refused(classifier_set, segmenter_set, scratch_store):
    config = EvaluationConfig((), (), (), bootstrap=0)
    with pytest.raises(EvaluationError, match="is a classification model but the data is a segmentation set"):
        evaluate([open_model(CLASSIFIER)], segmenter_set, config)
    with pytest.raises(EvaluationError, match="has 11 classes but the data has 10"):
        evaluate([open_model(SEGMENTER)], dataclasses.replace(classifier_set, task="segmentation"), config)
    renamed = copy_entry(CLASSIFIER, scratch_store, "renamed", class_names=[f"c{i}" for i in range(10)])
    with pytest.raises(EvaluationError, match="different classes"):
        evaluate([open_model(CLASSIFIER), open_model(renamed)], classifier_set, config)
