"""Resolve what to export: a checkpoint plus a preset, the checkpoint's own preset, or inferred config."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from common.kinds import ModelKind
from models.checkpoint import (
    check_state_dict,
    extract_state_dict,
    infer_state_dict_config,
    read_checkpoint,
)
from models.factory import build_model
from models.families import lam_defaults, preset_from_config
from models.presets import Preset, apply_overrides, get_preset, preset_from_dict


@dataclass
class ExportSource:
    """A model ready to export, its preset, and where it came from."""

    model: nn.Module
    preset: Preset
    checkpoint: Path
    origin: str  # "preset" | "checkpoint" | "inferred"
    threshold_source: str = ""


def threshold_source(preset: Preset, choice: Any, at_export: bool) -> str:
    """How the manifest's threshold was set: at export (``--threshold``), by the checkpoint's trainer
    (``training classify --choose-threshold``), or ``""`` where it is the preset's."""
    if at_export:
        if not ModelKind.of(preset.task, preset.activation).thresholded:
            raise ValueError(f"--threshold: {preset.name} is not a multi-label (sigmoid) classifier; only those "
                             "decide labels by a threshold")
        return "set at export (--threshold)"
    if not isinstance(choice, dict) or choice.get("threshold") != preset.threshold:  # none, or another run's
        return ""
    return (f"chosen on the {choice.get('split', 'validation')} split ({choice.get('images', '?')} images) to maximise "
            f"{choice['criterion']}: {choice['figures'][choice['criterion']]:.1f} there, "
            f"{choice['at_0.5'][choice['criterion']]:.1f} at 0.5")


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
        defaults = lam_defaults(preset.arch)  # lambda is not stored in weights: say which default is used
        if overrides.get("lam") is None and defaults is not None:
            lam, reference = defaults.for_heads(preset.heads)
            why = (f"the reference value for {preset.arch} with {preset.heads} head(s)" if reference else
                   f"no reference value for {preset.arch} with {preset.heads} heads, so the {preset.arch} default")
            print(f"note: lambda is not stored in weights; using {lam}, {why} (pass --lam to change)",
                  file=sys.stderr)
    chosen = threshold_source(preset, raw.get("threshold_choice") if origin == "checkpoint" else None,
                              at_export=overrides.get("threshold") is not None)
    model = build_model(preset)
    check_state_dict(model, state, source=str(checkpoint))
    model.load_state_dict(state, strict=True)
    return ExportSource(model.eval(), preset, checkpoint, origin, chosen)
