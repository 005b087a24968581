"""``create_model``: build any registered preset, with overrides, carrying its metadata."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.presets import ARCHITECTURES, Preset, apply_overrides, get_preset, register_architecture
from models.resnet_csra import ResNetCSRA
from models.vit_csra import VIT_VARIANTS, ViTCSRA


@register_architecture("resnet_csra")
def build_resnet_csra(preset: Preset) -> nn.Module:
    """ResNet-CSRA (MSL-C) from a preset."""
    return ResNetCSRA(preset.arch_args["depth"], preset.num_classes, heads=preset.heads, lam=preset.lam)


@register_architecture("vit_csra")
def build_vit_csra(preset: Preset) -> nn.Module:
    """ViT-CSRA (MSL-V) from a preset; ``variant`` or explicit width/depth/num_heads."""
    args = preset.arch_args
    if "variant" in args:
        if args["variant"] not in VIT_VARIANTS:
            raise ValueError(f"unknown ViT variant {args['variant']!r}; known: {', '.join(VIT_VARIANTS)}")
        embed_dim, depth, num_heads = VIT_VARIANTS[args["variant"]]
    else:
        embed_dim, depth, num_heads = args["embed_dim"], args["depth"], args["num_heads"]
    return ViTCSRA(embed_dim, depth, num_heads, preset.num_classes, heads=preset.heads, lam=preset.lam,
                   patch_size=args.get("patch_size", 16), base_size=args.get("base_size", 224))


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
