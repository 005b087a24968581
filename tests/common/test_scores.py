"""Logits -> scores and named labels, against hand-computed values."""

from __future__ import annotations

import numpy as np

from common.scores import softmax, top_labels

NAMES = ["a", "b", "c"]


def test_labels_at_or_above_threshold_highest_first_capped_by_top_k():
    scores = np.array([0.7, 0.2, 0.9])
    assert top_labels(scores, NAMES, threshold=0.5) == [{"name": "c", "score": 0.9}, {"name": "a", "score": 0.7}]
    assert top_labels(scores, NAMES, 1, threshold=0.5) == [{"name": "c", "score": 0.9}]
    assert top_labels(scores, NAMES, threshold=0.95) == []
    assert top_labels(np.array([0.5, 0.4, 0.1]), NAMES, threshold=0.5) == [{"name": "a", "score": 0.5}]  # >= threshold


def test_softmax_is_stable_and_sums_to_one():
    logits = np.array([[1000.0, 1001.0, 999.0], [-5.0, 0.0, 5.0]])
    probs = softmax(logits)
    e = np.exp([-1.0, 0.0, -2.0])
    np.testing.assert_allclose(probs[0], e / e.sum())  # no overflow at logits of 1000
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert top_labels(probs[1], NAMES, 2) == [{"name": "c", "score": round(probs[1, 2], 6)},
                                              {"name": "b", "score": round(probs[1, 1], 6)}]
    assert top_labels(probs[1], NAMES, 3, threshold=0.5) == [{"name": "c", "score": round(probs[1, 2], 6)}]
