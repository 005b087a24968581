"""The model factory: ``build_model`` builds the architecture a preset names, ``create_model`` a registered preset
by name with overrides; both attach the preset as ``model.preset``."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.presets import ARCHITECTURES, Preset, apply_overrides, get_preset


def build_model(preset: Preset) -> nn.Module:
    """Build the architecture a preset names and attach the preset as ``model.preset``."""
    if preset.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {preset.arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    model = ARCHITECTURES[preset.arch](preset)
    model.preset = preset
    return model


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build preset ``name``; overrides: num_classes, class_names, heads, lam, image_size, threshold."""
    return build_model(apply_overrides(get_preset(name), **overrides))
