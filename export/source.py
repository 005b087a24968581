"""Resolve what to export: a checkpoint plus a preset, the checkpoint's own preset, or inferred config."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
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
# The reference values follow the head count (SPEC section 1): ResNet H=1 (VOC) 0.1, H=6 (COCO) 0.4;
# ViT H=1 (VOC, WIDER) 0.3, H=8 (COCO) 1.0. Other head counts get the architecture default.
DEFAULT_LAM = {"resnet_csra": 0.1, "vit_csra": 0.3}
REFERENCE_LAM = {("resnet_csra", 1): 0.1, ("resnet_csra", 6): 0.4, ("vit_csra", 1): 0.3, ("vit_csra", 8): 1.0}


def default_lam(arch: str, heads: int) -> tuple[float, bool]:
    """(lambda, whether it is a reference value for this architecture and head count)."""
    if (arch, heads) in REFERENCE_LAM:
        return REFERENCE_LAM[(arch, heads)], True
    return DEFAULT_LAM.get(arch, 0.0), False


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
    elif arch in ("mobilenetv2_csra", "mobilenetv2"):  # ImageNet-trained trunks: 224 px, ImageNet statistics
        preset = get_preset("mobilenetv2-csra" if arch == "mobilenetv2_csra" else "imagenet-mobilenetv2")
        return replace(preset, name=name, class_names=generic_class_names(config["num_classes"]), image_size=224,
                       heads=config.get("heads", 1), arch_args={}, pretrained="",
                       description=f"inferred from checkpoint ({arch})")
    else:
        args, size, dynamic = dict(config.get("arch_args", {})), config.get("image_size", 512), True
    heads = config.get("heads", 1)
    return Preset(name=name, task=config["task"], arch=arch, arch_args=args,
                  class_names=generic_class_names(config["num_classes"]), image_size=size,
                  heads=heads, lam=default_lam(arch, heads)[0], dynamic_size=dynamic,
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
        if overrides.get("lam") is None and preset.arch in DEFAULT_LAM:
            lam, reference = default_lam(preset.arch, preset.heads)
            why = (f"the reference value for {preset.arch} with {preset.heads} head(s)" if reference else
                   f"no reference value for {preset.arch} with {preset.heads} heads, so the {preset.arch} default")
            print(f"note: lambda is not stored in weights; using {lam}, {why} (pass --lam to change)",
                  file=sys.stderr)
    model = build_model(preset)
    check_state_dict(model, state, source=str(checkpoint))
    model.load_state_dict(state, strict=True)
    return ExportSource(model.eval(), preset, checkpoint, origin)
