"""Multi-label metrics (the MSL paper): AP against scikit-learn, threshold metrics by hand, VOC 0 = ignored."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from robustness.metrics import THRESHOLD_GRID, average_precision, choose_threshold, multilabel_metrics

# Hand-computed example: 4 images x 3 classes, threshold 0.5 (inclusive: 0.5 is a prediction).
SCORES = np.array(
    [
        [0.9, 0.2, 0.45],
        [0.6, 0.7, 0.1],
        [0.3, 0.8, 0.4],
        [0.5, 0.1, 0.2],
    ]
)
TARGETS = np.array(
    [
        [1, -1, 1],
        [-1, 1, -1],
        [1, 1, -1],
        [-1, -1, 1],
    ]
)
# class 0: predicted rows 0,1,3 (3), positives rows 0,2 (2), TP 1
# class 1: predicted rows 1,2 (2), positives rows 1,2 (2), TP 2
# class 2: predicted none (0 -> counts as 1), positives rows 0,3 (2), TP 0
# AP: class 0 ranks +,-,-,+ -> (1/1 + 2/4)/2 = 0.75; class 1 ranks +,+ -> 1; class 2 ranks +,-,+,- -> (1 + 2/3)/2
EXPECTED = {
    "mAP": 100 * (0.75 + 1.0 + 5 / 6) / 3,
    "CP": 100 * (1 / 3 + 2 / 2 + 0 / 1) / 3,
    "CR": 100 * (1 / 2 + 2 / 2 + 0 / 2) / 3,
    "CF1": 100 * 8 / 17,  # 2 * (4/9) * (1/2) / (4/9 + 1/2)
    "OP": 100 * 3 / 5,
    "OR": 100 * 3 / 6,
    "OF1": 100 * 6 / 11,  # 2 * (3/5) * (1/2) / (3/5 + 1/2)
}


def _assert_metrics(result, expected):
    assert set(result) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


def test_threshold_metrics_match_the_hand_computed_example():
    _assert_metrics(multilabel_metrics(SCORES, TARGETS), EXPECTED)


def test_average_precision_matches_the_reference_mean_of_precision_at_positive_ranks():
    assert average_precision(SCORES, TARGETS) == pytest.approx([0.75, 1.0, 5 / 6], abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_agrees_with_sklearn_on_random_untied_data(seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((300, 12))
    assert len(np.unique(scores)) == scores.size
    targets01 = (rng.random((300, 12)) < rng.uniform(0.05, 0.6, size=12)).astype(int)
    expected = [average_precision_score(targets01[:, c], scores[:, c]) for c in range(12)]
    assert np.max(np.abs(average_precision(scores, targets01) - expected)) < 1e-9
    # The VOC form of the same labels (-1 for negatives) gives the same AP.
    assert np.max(np.abs(average_precision(scores, 2 * targets01 - 1) - expected)) < 1e-9
    assert multilabel_metrics(scores, targets01)["mAP"] == pytest.approx(100 * np.mean(expected), abs=1e-9)


def test_tied_scores_give_sklearn_ap_whatever_the_input_order():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, size=(80, 3)) / 5.0  # many ties
    targets = (rng.random((80, 3)) < 0.4).astype(int)
    expected = [average_precision_score(targets[:, c], scores[:, c]) for c in range(3)]
    perm = rng.permutation(80)
    assert average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)
    assert average_precision(scores[perm], targets[perm]) == pytest.approx(expected, abs=1e-12)


def test_voc_zero_targets_are_ignored_in_map_and_threshold_metrics():
    # Two "difficult" rows with extreme scores: counted as negatives they would change every metric.
    difficult_scores = np.array([[0.99, 0.95, 0.97], [0.0, 0.01, 0.02]])
    difficult_targets = np.array([[0, 0, 0], [0, 0, 0]])
    scores = np.vstack([difficult_scores[:1], SCORES, difficult_scores[1:]])
    targets = np.vstack([difficult_targets[:1], TARGETS, difficult_targets[1:]])
    _assert_metrics(multilabel_metrics(scores, targets), EXPECTED)
    as_negatives = multilabel_metrics(scores, np.where(targets == 0, -1, targets))
    assert as_negatives["mAP"] < EXPECTED["mAP"] - 5
    assert as_negatives["OP"] == pytest.approx(100 * 3 / 8)


def test_zero_one_targets_mean_negative_when_there_is_no_minus_one():
    _assert_metrics(multilabel_metrics(SCORES, (TARGETS == 1).astype(int)), EXPECTED)
    with pytest.raises(ValueError, match="targets hold -1 but ignore_zero=False"):
        multilabel_metrics(SCORES, TARGETS, ignore_zero=False)
    # Forcing the VOC reading of 0/1 targets leaves no negatives: every prediction is then a TP.
    forced = multilabel_metrics(SCORES, (TARGETS == 1).astype(int), ignore_zero=True)
    assert forced["OP"] == 100.0


def test_classes_without_positives_are_left_out_of_class_means():
    # Class 3 has no positive; its two predictions (0.9, 0.8) still count as false positives in OP.
    scores = np.hstack([SCORES, [[0.9], [0.8], [0.1], [0.2]]])
    targets = np.hstack([TARGETS, [[-1], [-1], [-1], [-1]]])
    result = multilabel_metrics(scores, targets)
    assert np.isnan(average_precision(scores, targets)[3])
    for key in ("mAP", "CP", "CR", "CF1", "OR"):
        assert result[key] == pytest.approx(EXPECTED[key], abs=1e-12), key
    assert result["OP"] == pytest.approx(100 * 3 / 7)
    assert result["OF1"] == pytest.approx(100 * 2 * (3 / 7) * (1 / 2) / (3 / 7 + 1 / 2))


def test_threshold_is_configurable():
    result = multilabel_metrics(SCORES, TARGETS, threshold=0.4)
    # class 2 now predicts rows 0 (0.45, positive) and 2 (0.4, negative): TP 1 of 2.
    assert result["CP"] == pytest.approx(100 * (1 / 3 + 1 + 1 / 2) / 3)
    assert result["CR"] == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3)


@pytest.mark.parametrize(
    ("scores", "targets", "message"),
    [
        (np.zeros((4, 3)), np.zeros((5, 3)), "scores have 4 rows but targets have 5"),
        (np.zeros((4, 3)), np.ones((4, 2)), "scores have 3 classes but targets have 2"),
        (np.zeros(4), np.ones(4), r"must both be \(N, C\) arrays"),
        (np.array([[np.nan, 0.1]]), np.array([[1, -1]]), "1 NaN values"),
        (np.array([[2.5, 0.1]]), np.array([[1, -1]]), r"expected probabilities in \[0, 1\]"),
        (np.array([[0.5, 0.1]]), np.array([[2, -1]]), r"targets hold values \[-1, 2\]"),
        (np.array([[0.5, 0.1]]), np.array([[-1, -1]]), "no class has a positive target"),
    ],
)
def test_bad_inputs_raise_value_error(scores, targets, message):
    with pytest.raises(ValueError, match=message):
        multilabel_metrics(scores, targets)


def test_bad_threshold_raises_value_error():
    with pytest.raises(ValueError, match=r"threshold 1.5 must lie in \[0, 1\]"):
        multilabel_metrics(SCORES, TARGETS, threshold=1.5)


def test_chosen_threshold_is_the_hand_computed_best_nearest_one_half():
    # Both positives score 0.2 or more and the negatives 0.1 or less: every threshold in (0.1, 0.2] finds both with
    # no false positive (OF1 100); of those, 0.2 is nearest 0.5. At 0.5 nothing is predicted (OF1 0).
    choice = choose_threshold([[0.3, 0.1], [0.2, 0.05]], [[1, 0], [1, 0]])
    assert choice["threshold"] == 0.2 and choice["criterion"] == "OF1"
    assert choice["figures"]["OF1"] == 100.0 and choice["at_0.5"]["OF1"] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_chosen_threshold_maximises_sklearns_micro_f1(seed):
    rng = np.random.default_rng(seed)
    targets = (rng.random((60, 5)) < 0.3).astype(int)
    scores = np.clip(0.25 * targets + 0.6 * rng.random((60, 5)), 0, 1)  # informative, and calibrated low
    micro = {t: f1_score(targets, scores >= t, average="micro", zero_division=0) for t in THRESHOLD_GRID}
    best = max(micro.values())
    expected = min((t for t in THRESHOLD_GRID if micro[t] == best), key=lambda t: abs(t - 0.5))
    choice = choose_threshold(scores, targets)
    assert choice["threshold"] == expected
    assert choice["figures"]["OF1"] == pytest.approx(100 * best)
    assert choice["figures"]["OF1"] > choice["at_0.5"]["OF1"]


def test_threshold_criterion_must_be_an_f1():
    with pytest.raises(ValueError, match="OF1 or CF1"):
        choose_threshold([[0.3]], [[1]], criterion="mAP")
