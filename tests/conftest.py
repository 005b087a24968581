"""Fixtures shared by the server and load-test suites: a tiny model store of real exported models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models
from export.pipeline import export_entry
from export.source import resolve_source

CLASSIFIER = "r18"
SEGMENTER = "seg"
SEGMENTER_PRESET = "deeplabv2-r18"
SEGMENTER_SIZE = 64


def _export(store: Path, tmp: Path, preset: str, name: str, formats: tuple[str, ...], **overrides) -> None:
    model = models.create_model(preset, **overrides)
    checkpoint = tmp / f"{name}.pth"
    torch.save(model.state_dict(), checkpoint)
    export_entry(resolve_source(checkpoint, preset, **overrides), name, "1", store, formats=formats, progress=False)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a random ResNet-18 CSRA classifier at 128 px and a random DeepLab-V2 R18 at 64 px."""
    tmp = tmp_path_factory.mktemp("server-store")
    store = tmp / "model_store"
    torch.manual_seed(0)
    _export(store, tmp, "resnet18-csra-128", CLASSIFIER, ("onnx", "torchscript"))
    _export(store, tmp, SEGMENTER_PRESET, SEGMENTER, ("onnx",), image_size=SEGMENTER_SIZE)
    return store


