"""ModelKind: one place for what a model's task and activation mean to its readers."""

from __future__ import annotations

import pytest

from model_store.manifest import ModelKind


@pytest.mark.parametrize(("task", "activation", "kind"), [
    ("classification", "sigmoid", ModelKind.MULTI_LABEL),
    ("classification", "softmax", ModelKind.SINGLE_LABEL),
    ("segmentation", "softmax", ModelKind.SEGMENTER),
])
def test_a_kind_comes_from_task_and_activation_and_gives_the_task_back(task, activation, kind):
    assert ModelKind.of(task, activation) is kind and kind.task == task


def test_only_a_multi_label_model_has_a_decision_threshold():
    assert ModelKind.MULTI_LABEL.threshold(0.5) == 0.5
    assert ModelKind.MULTI_LABEL.threshold(0.5, requested=0.0) == 0.0  # a requested 0 is a threshold, not "none"
    assert ModelKind.SINGLE_LABEL.threshold(0.5, requested=0.3) is None
    assert ModelKind.SEGMENTER.threshold(0.5) is None


def test_output_shapes():
    assert ModelKind.MULTI_LABEL.output_shape(10, [160, 160]) == [-1, 10]
    assert ModelKind.SINGLE_LABEL.output_shape(1000, [224, 224]) == [-1, 1000]
    assert ModelKind.SEGMENTER.output_shape(11, [-1, -1]) == [-1, 11, -1, -1]
