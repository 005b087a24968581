"""The raw ONNX Runtime ceiling: both thread layouts give the same outputs and count whole batches."""

from pathlib import Path

import numpy as np

from loadtests.raw_ceiling import BoundSession, Throughput, best_raw, raw_layouts, raw_onnxruntime
from model_store.manifest import entry_dir, load_manifest
from tests.conftest import CLASSIFIER


def test_layouts_agree_and_count_whole_batches(store: Path) -> None:
    manifest = load_manifest(entry_dir(store, CLASSIFIER))
    size = manifest.input.size
    feed = {manifest.input.name: np.random.default_rng(3).random((4, 3, *size), dtype=np.float32)}
    layouts = raw_layouts(manifest.artifact("model.onnx"), feed, cores=2)
    assert {name: len(sessions) for name, sessions in layouts.items()} == {"1x2": 1, "2x1": 2}
    outputs = [session.run(None, feed)[0] for sessions in layouts.values() for session in sessions]
    for other in outputs[1:]:
        np.testing.assert_allclose(other, outputs[0], atol=1e-5)  # thread count does not change the answer

    runs = {name: raw_onnxruntime(sessions, feed, 0.3) for name, sessions in layouts.items()}
    for run in runs.values():
        assert run.count > 0 and run.count % 4 == 0 and run.seconds >= 0.3 and run.server_cpu > 0
    name, best = best_raw({"only": layouts["2x1"]}, feed, 0.3)
    assert name == "only" and best.count % 4 == 0


def test_rate_is_items_per_second() -> None:
    assert Throughput(count=30, seconds=1.5).rate == 20.0


def test_the_bound_session_runs_the_servers_backend_and_answers_like_a_plain_session(store: Path) -> None:
    """On a GPU the raw ceiling is the server's own backend in a loop; here the same class runs on the CPU."""
    manifest = load_manifest(entry_dir(store, CLASSIFIER))
    feed = {manifest.input.name: np.random.default_rng(4).random((2, 3, *manifest.input.size), dtype=np.float32)}
    bound = BoundSession(manifest.artifact("model.onnx"), manifest.input.name, ["cpu"])
    plain = raw_layouts(manifest.artifact("model.onnx"), feed, cores=1)["1x1"][0]
    assert bound.provider == "CPUExecutionProvider"
    np.testing.assert_allclose(bound.run(None, feed)[0], plain.run(None, feed)[0], atol=1e-5)
