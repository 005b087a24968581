"""A preset with seeded random weights, as a checkpoint or as a verified store entry (tests and benchmarks)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import models
from export.pipeline import export_entry
from export.source import resolve_source
from model_store.manifest import Manifest


def random_model(preset: str, seed: int | None = 0, **overrides: Any) -> nn.Module:
    """Build ``preset`` after ``torch.manual_seed(seed)``; ``seed=None`` draws from the global generator as it is."""
    if seed is not None:
        torch.manual_seed(seed)
    return models.create_model(preset, **overrides)


def save_random(preset: str, path: str | Path, prefix: str = "", seed: int | None = 0, **overrides: Any) -> Path:
    """Save a seeded random checkpoint of a preset (``prefix="module."`` gives a DataParallel layout)."""
    path = Path(path)
    state = random_model(preset, seed, **overrides).state_dict()
    torch.save({f"{prefix}{k}": v for k, v in state.items()}, path)
    return path


def export_random(preset: str, name: str, store: str | Path, *, formats: Sequence[str] = ("onnx",),
                  seed: int | None = 0, version: str = "1", progress: bool = False, **overrides: Any) -> Manifest:
    """Export ``preset`` with seeded random weights to ``store/name/version`` (parity-checked like any export).

    The weights go through a temporary checkpoint and :func:`resolve_source`, exactly as ``python -m export``
    would load them; the manifest records that checkpoint's path and hash.
    """
    with tempfile.TemporaryDirectory(prefix="random-weights-") as tmp:
        checkpoint = save_random(preset, Path(tmp) / f"{name}.pth", seed=seed, **overrides)
        return export_entry(resolve_source(checkpoint, preset, **overrides), name, version, store, formats=formats,
                            progress=progress)
