"""Model lookup: defaults per task, 404 for unknown models, 400 for the wrong task, 503 while loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.manifest import Manifest
from server.errors import ApiError
from server.registry import FAILED, READY, ModelRegistry, read_store
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
    with pytest.raises(ApiError) as info:
        registry().resolve("nope", ("classification",), "/predict")
    assert (info.value.status_code, info.value.code) == (404, "unknown_model")
    assert "seg, cls, cls2" in str(info.value.detail)
    with pytest.raises(ApiError) as info:
        registry().resolve("seg", ("classification",), "/predict")
    assert (info.value.status_code, info.value.code) == (400, "wrong_task")
    assert "(cls, cls2)" in str(info.value.detail)


def test_loading_is_503_with_retry_after_and_a_failed_model_is_500():
    models = registry()
    with pytest.raises(ApiError) as info:
        models.resolve(None, ("classification",), "/predict")
    assert (info.value.status_code, info.value.code, info.value.headers) == (503, "model_loading", {"Retry-After": "1"})
    assert not models.ready
    models.states["cls"], models.errors["cls"] = FAILED, "OSError: disk on fire"
    with pytest.raises(ApiError) as info:
        models.runner("cls")
    assert info.value.status_code == 500 and "disk on fire" in str(info.value.detail)
    models.states = dict.fromkeys(models.states, READY)
    assert models.ready


def test_read_store_checks_model_selection(store):
    assert sorted(read_store(Settings(store=store))) == ["imagenet-mobilenetv2", "r18", "r18-softmax", "seg"]
    assert list(read_store(Settings(store=store, models=("seg",)))) == ["seg"]
    with pytest.raises(ValueError, match="--models names nope not in"):
        read_store(Settings(store=store, models=("nope",)))
    with pytest.raises(ValueError, match="--default-model 'seg' is not served"):
        read_store(Settings(store=store, models=("r18",), default_model="seg"))


def test_read_store_refuses_an_empty_store(tmp_path):
    with pytest.raises(ValueError, match="no exported models"):
        read_store(Settings(store=tmp_path))
