"""Model lookup: defaults per task, 404 for unknown models, 400 for the wrong task, 503 while loading."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from model_store.manifest import Manifest
from server.domain_errors import ServingError
from server.errors import http_headers, http_status
from server.registry import FAILED, PROBE_SECONDS, READY, UNHEALTHY, ModelRegistry, read_store
from server.settings import Settings


def manifest(name: str, task: str) -> Manifest:
    return Manifest.from_json({"schema": 2, "name": name, "version": "1", "task": task, "class_names": ["a"],
                               "input": {"name": "images", "size": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1]},
                               "output": {"name": "logits"}, "files": {}}, Path(name))


def registry(default: str | None = None) -> ModelRegistry:
    manifests = {m.name: m for m in (manifest("seg", "segmentation"), manifest("cls", "classification"),
                                     manifest("cls2", "classification"))}
    return ModelRegistry(manifests, Settings(default_model=default))


def test_default_is_the_first_model_of_the_task_unless_configured():
    assert registry().default_for(("classification",)) == "cls"
    assert registry().default_for(("classification", "segmentation")) == "seg"
    assert registry("cls2").default_for(("classification",)) == "cls2"
    assert registry("cls2").default_for(("segmentation",)) == "seg"  # the default does not fit: first that fits


def test_unknown_model_is_404_and_wrong_task_is_400():
    with pytest.raises(ServingError) as info:
        registry().resolve("nope", ("classification",), "/predict")
    assert (http_status(info.value), info.value.code) == (404, "unknown_model")
    assert "seg, cls, cls2" in str(info.value.detail)
    with pytest.raises(ServingError) as info:
        registry().resolve("seg", ("classification",), "/predict")
    assert (http_status(info.value), info.value.code) == (400, "wrong_task")
    assert "(cls, cls2)" in str(info.value.detail)


def test_loading_is_503_with_retry_after_and_a_failed_model_is_500():
    models = registry()
    with pytest.raises(ServingError) as info:
        models.resolve(None, ("classification",), "/predict")
    error = info.value
    assert (http_status(error), error.code, http_headers(error)) == (503, "model_loading", {"Retry-After": "1"})
    assert not models.ready
    models.states["cls"], models.errors["cls"] = FAILED, "OSError: disk on fire"
    with pytest.raises(ServingError) as info:
        models.runner("cls")
    assert http_status(info.value) == 500 and "disk on fire" in str(info.value.detail)
    models.states = dict.fromkeys(models.states, READY)
    assert models.ready


def test_read_store_checks_model_selection(store):
    assert sorted(read_store(Settings(store=store))[0]) == ["imagenet-mobilenetv2", "r18", "r18-softmax", "seg"]
    assert list(read_store(Settings(store=store, models=("seg",)))[0]) == ["seg"]
    with pytest.raises(ValueError, match="--models names nope not in"):
        read_store(Settings(store=store, models=("nope",)))
    with pytest.raises(ValueError, match="--default-model 'seg' is not served"):
        read_store(Settings(store=store, models=("r18",), default_model="seg"))


def test_read_store_refuses_an_empty_store(tmp_path):
    with pytest.raises(ValueError, match="no exported models"):
        read_store(Settings(store=tmp_path))


def copy_store(store, tmp_path):
    """A writable copy of the test store's classifier and segmenter entries."""
    own = tmp_path / "model_store"
    for name in ("r18", "seg"):
        shutil.copytree(store / name, own / name)
    return own


def test_a_corrupt_entry_fails_alone_and_an_unselected_one_is_not_read(store, tmp_path):
    own = copy_store(store, tmp_path)
    (own / "seg" / "1" / "manifest.json").write_text("{not json")
    manifests, failures = read_store(Settings(store=own))
    assert list(manifests) == ["r18"] and list(failures) == ["seg"] and "not valid JSON" in failures["seg"]
    manifests, failures = read_store(Settings(store=own, models=("r18",)))
    assert list(manifests) == ["r18"] and failures == {}
    models = ModelRegistry(manifests | {}, Settings(), failures={"seg": "bad"})
    assert models.states == {"r18": "loading", "seg": "failed"} and models.names == ["r18", "seg"]
    with pytest.raises(ServingError) as info:
        models.resolve("seg", ("segmentation",), "/segment")
    assert (http_status(info.value), info.value.code) == (500, "model_failed")
    assert models.describe("seg") == {"name": "seg", "state": "failed", "error": "bad"}


def test_an_altered_artifact_is_found_when_the_loader_opens_it(store, tmp_path):
    own = copy_store(store, tmp_path)
    manifests, _ = read_store(Settings(store=own))  # parsed at start, files not hashed yet
    onnx = own / "r18" / "1" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    models = ModelRegistry(manifests, Settings(models=("r18", "seg")))
    asyncio.run(models.load())
    try:
        assert models.states == {"r18": "failed", "seg": "ready"}
        assert "model.onnx: sha256 differs from the manifest (altered)" in models.errors["r18"]
    finally:
        asyncio.run(models.close())


def test_an_unhealthy_model_answers_503_and_lets_one_probe_through(monkeypatch):
    models = registry()
    models.states = dict.fromkeys(models.states, READY)
    models.runners = dict.fromkeys(models.states, "runner")
    models._health("cls", "3 batches in a row failed (last: RuntimeError)")
    assert models.states["cls"] == UNHEALTHY and not models.ready
    with pytest.raises(ServingError) as info:
        models.runner("cls")
    assert (http_status(info.value), info.value.code) == (503, "model_unhealthy")
    assert http_headers(info.value) == {"Retry-After": str(PROBE_SECONDS)} and "RuntimeError" in str(info.value.detail)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + PROBE_SECONDS + 0.1)
    assert models.runner("cls") == "runner"  # the next probe, a while later
    models._health("cls", None)
    assert models.states["cls"] == READY and "cls" not in models.errors and models.ready
