"""ECE on hand-computed cases, bootstrap resampling and percentile intervals."""

import numpy as np
import pytest

from robustness.evaluation.statistics import bootstrap_indices, expected_calibration_error, percentile_interval


def test_ece_matches_a_hand_computed_case():
    scores = np.array([0.05, 0.1, 0.5, 0.95, 1.0, 0.62])
    positives = np.array([0, 1, 1, 1, 1, 0], dtype=bool)
    # 15 bins of width 1/15: 0.05 -> bin 0, 0.1 -> 1, 0.5 -> 7, 0.62 -> 9, 0.95 and 1.0 -> 14 (the last bin).
    # Gaps |acc - conf| weighted by |B|/N: (0.05 + 0.9 + 0.5 + 0.62 + 2 * 0.025) / 6.
    assert expected_calibration_error(scores, positives) == pytest.approx(2.12 / 6, abs=1e-12)


def test_ece_is_zero_for_a_calibrated_bin_and_one_for_confidently_wrong_scores():
    assert expected_calibration_error(np.full(10, 0.3), np.arange(10) < 3) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([False, True])) == 1.0


def test_ece_of_no_decision_is_nan():
    assert np.isnan(expected_calibration_error(np.zeros(0), np.zeros(0, dtype=bool)))


def test_bootstrap_indices_are_deterministic_for_a_seed_and_in_range():
    a, b = bootstrap_indices(7, 40, seed=5), bootstrap_indices(7, 40, seed=5)
    assert a.shape == (40, 7) and np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 6
    assert not np.array_equal(a, bootstrap_indices(7, 40, seed=6))


def test_percentile_interval_skips_nan_and_reports_none_without_samples():
    samples = np.r_[np.arange(101.0), np.nan]
    assert percentile_interval(samples) == pytest.approx([2.5, 97.5])
    assert percentile_interval(np.array([np.nan])) == [None, None]
