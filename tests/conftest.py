"""Fixtures shared across suites: tiny model stores of real exported models with seeded random weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.random_weights import export_random

CLASSIFIER = "r18"
SEGMENTER = "seg"
SEGMENTER_PRESET = "deeplabv2-r18"
SEGMENTER_SIZE = 64


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a random ResNet-18 CSRA classifier at 128 px and a random DeepLab-V2 R18 at 64 px."""
    store = tmp_path_factory.mktemp("server-store") / "model_store"
    export_random("resnet18-csra-128", CLASSIFIER, store, formats=("onnx", "torchscript"), seed=0)
    # seed=None: the segmenter draws on from the classifier's random stream, so its weights stay as they were.
    export_random(SEGMENTER_PRESET, SEGMENTER, store, seed=None, image_size=SEGMENTER_SIZE)
    return store


@pytest.fixture(scope="session")
def r18_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with ``r18`` (resnet18-csra-128, seed 0) exported in every format (onnx, torchscript, mar, triton)."""
    store = tmp_path_factory.mktemp("store")
    export_random("resnet18-csra-128", "r18", store, formats=("onnx", "torchscript", "mar", "triton"), seed=0)
    return store
