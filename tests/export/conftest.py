"""Shared fixtures: small random checkpoints and one exported store reused across export tests."""

from pathlib import Path

import pytest
import torch

import models
from export.pipeline import export_entry
from export.source import resolve_source


def save_random(preset: str, path: Path, prefix: str = "", seed: int = 0, **overrides) -> Path:
    """Save a seeded random checkpoint of a preset (optionally with a DataParallel prefix)."""
    torch.manual_seed(seed)
    state = models.create_model(preset, **overrides).state_dict()
    torch.save({f"{prefix}{k}": v for k, v in state.items()}, path)
    return path


@pytest.fixture(scope="session")
def r18_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random("resnet18-csra-128", tmp_path_factory.mktemp("ckpt") / "r18.pth", prefix="module.")


@pytest.fixture(scope="session")
def r18_store(tmp_path_factory: pytest.TempPathFactory, r18_checkpoint: Path) -> Path:
    """A store with ``r18`` exported in every format (onnx, torchscript, mar, triton)."""
    store = tmp_path_factory.mktemp("store")
    export_entry(resolve_source(r18_checkpoint, "resnet18-csra-128"), "r18", "1", store,
                 formats=("onnx", "torchscript", "mar", "triton"), progress=False)
    return store
