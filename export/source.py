"""Resolve what to export: a checkpoint plus a preset, the checkpoint's own preset, or inferred config."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from models.checkpoint import (
    check_state_dict,
    extract_state_dict,
    infer_state_dict_config,
    read_checkpoint,
)
from models.classnames import generic_class_names
from models.presets import Preset, apply_overrides, get_preset, preset_from_dict
from models.registry import build_model

# lambda is not stored in weights; used only when neither --preset nor the checkpoint says.
DEFAULT_LAM = {"resnet_csra": 0.1, "vit_csra": 0.3}


@dataclass
class ExportSource:
    """A model ready to export, its preset, and where it came from."""

    model: nn.Module
    preset: Preset
    checkpoint: Path
    origin: str  # "preset" | "checkpoint" | "inferred"


def preset_from_config(config: dict[str, Any], name: str) -> Preset:
    """A preset for an architecture recovered by ``infer_config`` (generic class names)."""
    arch = config["arch"]
    if arch == "resnet_csra":
        args, size, dynamic = {"depth": config["depth"]}, 448, False
    elif arch == "vit_csra":
        args = {k: config[k] for k in ("embed_dim", "depth", "num_heads", "patch_size", "base_size")}
        size, dynamic = config["base_size"], True
    else:
        args, size, dynamic = dict(config.get("arch_args", {})), config.get("image_size", 512), True
    return Preset(name=name, task=config["task"], arch=arch, arch_args=args,
                  class_names=generic_class_names(config["num_classes"]), image_size=size,
                  heads=config.get("heads", 1), lam=DEFAULT_LAM.get(arch, 0.0), dynamic_size=dynamic,
                  description=f"inferred from checkpoint ({arch})")


def resolve_source(checkpoint: str | Path, preset_name: str | None = None, **overrides: Any) -> ExportSource:
    """Build the model for ``checkpoint`` and load it strictly (masked branch: none, it is the same net)."""
    checkpoint = Path(checkpoint)
    raw = read_checkpoint(checkpoint)
    state = extract_state_dict(raw, source=str(checkpoint))
    stored = raw.get("preset") if isinstance(raw, dict) else None
    if preset_name:
        preset, origin = apply_overrides(get_preset(preset_name), **overrides), "preset"
    elif isinstance(stored, dict):
        preset, origin = apply_overrides(preset_from_dict(stored), **overrides), "checkpoint"
    else:
        config = infer_state_dict_config(state)
        preset, origin = apply_overrides(preset_from_config(config, checkpoint.stem), **overrides), "inferred"
        if "lam" not in overrides and preset.arch in DEFAULT_LAM:
            print(f"note: lambda is not stored in weights; using {preset.lam} (pass --lam to change)", file=sys.stderr)
    model = build_model(preset)
    check_state_dict(model, state, source=str(checkpoint))
    model.load_state_dict(state, strict=True)
    return ExportSource(model.eval(), preset, checkpoint, origin)
