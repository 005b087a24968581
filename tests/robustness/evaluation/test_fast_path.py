"""The faster evaluation (library-identical corruptions, perturbation ahead of inference, bootstrap figures of all
resamples at once) writes the very report of the reference path for the same seed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from common.compute import available_cores
from robustness.evaluation import EvaluationConfig, evaluate, open_model
from robustness.evaluation.prefetch import Prefetched
from robustness.evaluation.reference import on_reference_path, reference_path
from tests.robustness.evaluation.conftest import CLASSIFIER

VARYING = ("created", "timings")


def test_the_fast_and_the_reference_path_give_the_same_report(classifier_set):
    config = EvaluationConfig(("b2", "b5"), ("glass_blur", "zoom_blur", "frost", "brightness", "elastic_transform",
                                             "shot_noise"), (1, 4), seed=5,
                              batch_size=7, bootstrap=150, limit=5)
    fast = evaluate([open_model(CLASSIFIER)], classifier_set, config)
    with reference_path():
        assert on_reference_path()
        reference = evaluate([open_model(CLASSIFIER)], classifier_set, config)
    assert not on_reference_path()
    assert len(fast["conditions"]) == 1 + 2 + 6 * 2
    assert fast["checks"]["demo-classifier"]["direction"]["tested"] > 0
    for key in fast:
        if key not in VARYING:
            assert fast[key] == reference[key], key
    assert fast["timings"]["model_inputs"] == reference["timings"]["model_inputs"]


def test_the_lab_gives_onnx_runtime_every_cpu_but_one_and_the_reference_its_defaults_with_the_same_logits():
    fast = open_model(CLASSIFIER)
    with reference_path():
        reference = open_model(CLASSIFIER)
    assert fast.session.get_session_options().intra_op_num_threads == max(1, available_cores() - 1)
    assert reference.session.get_session_options().intra_op_num_threads == 0  # ONNX Runtime decides
    batch = np.random.default_rng(2).normal(size=(9, 3, *fast.manifest.input_size)).astype(np.float32)
    assert np.array_equal(fast.predict(batch), reference.predict(batch))


def test_prefetched_items_arrive_in_order_and_inline_without_depth():
    with Prefetched(iter(range(50)), 3) as ahead:
        assert list(ahead) == list(range(50))
    with Prefetched(iter(range(5)), 0) as ahead:
        assert list(ahead) == [0, 1, 2, 3, 4]


def test_an_error_in_the_background_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("image 2 is unreadable")

    seen = []
    with pytest.raises(ValueError, match="image 2 is unreadable"), Prefetched(items(), 4) as ahead:
        seen.extend(ahead)
    assert seen == [1, 2]


def test_leaving_early_stops_the_background_thread():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    before = threading.active_count()
    with Prefetched(items(), 2) as ahead:
        assert next(ahead) == 0
    time.sleep(0.05)
    assert threading.active_count() == before
    assert len(produced) <= 5  # the one taken, two queued, at most two more in hand
