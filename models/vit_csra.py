"""MSL-V: timm's VisionTransformer whose patch tokens feed a multi-head CSRA classifier.

Registers the ``vit_csra`` builder, its presets and the ``vit`` family (checkpoint recognition, lambda).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from common.kinds import Task
from common.labels import COCO_CLASSES, EMBEDDED_CLASSES, VOC_CLASSES, WIDER_ATTRIBUTES
from models.checkpoint import count_indices
from models.csra import MultiHeadCSRA
from models.families import inferred_preset
from models.presets import (
    UNIT_STD,
    ZERO_MEAN,
    Family,
    LamDefaults,
    Preset,
    register_architecture,
    register_family,
    register_preset,
)

# (embed_dim, depth, num_heads) per variant; "tiny-test" is a minimal model for tests and demos.
VIT_VARIANTS: dict[str, tuple[int, int, int]] = {
    "L/16": (1024, 24, 16),
    "B/16": (768, 12, 12),
    "S/16": (384, 12, 6),
    "Ti/16": (192, 12, 3),
    "tiny-test": (64, 2, 2),
}


class ViTCSRA(VisionTransformer):
    """ViT with the class token dropped after the final norm and a CSRA head on the token grid.

    The positional-embedding grid stays at the reference 224/16 = 14x14, so reference checkpoints
    load strictly; other multiples of 16 are served by bicubic resampling of that grid at run time.
    """

    def __init__(
        self,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        num_classes: int = 20,
        heads: int = 1,
        lam: float = 0.3,
        patch_size: int = 16,
        base_size: int = 224,
    ) -> None:
        super().__init__(
            img_size=base_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_classes=0,
            global_pool="token",
            dynamic_img_size=True,
        )
        self.classifier = MultiHeadCSRA(embed_dim, num_classes, heads=heads, lam=lam)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Add position embeddings to NHWC patch tokens, resampling the grid bicubically to (H, W).

        The grid is always passed through the resize (an identity at the native size) so that traced
        and exported graphs stay valid for every input size; no antialiasing, so ONNX Resize matches.
        """
        batch, grid_h, grid_w, dim = x.shape
        prefix = self.pos_embed[:, : self.num_prefix_tokens]
        base_h, base_w = self.patch_embed.grid_size
        grid = self.pos_embed[:, self.num_prefix_tokens :].reshape(1, base_h, base_w, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        pos = torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)], dim=1)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), x.reshape(batch, grid_h * grid_w, dim)], dim=1)
        return self.pos_drop(tokens + pos)

    def token_map(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normed patch tokens as a map (B, D, H/16, W/16)."""
        grid_h = x.shape[-2] // self.patch_embed.patch_size[0]
        grid_w = x.shape[-1] // self.patch_embed.patch_size[1]
        tokens = self.forward_features(x)[:, self.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid_h, grid_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits (B, C) for images (B, 3, H, W), H and W multiples of 16."""
        return self.classifier(self.token_map(x))


# lambda is not stored in weights; reference values (CSRA, docs/papers.md): H=1 (VOC, WIDER) 0.3, H=8 (COCO) 1.0.
VIT_LAM = LamDefaults(default=0.3, reference={1: 0.3, 8: 1.0})


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


def recognise(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Width, depth, patch and base size (and variant, if known) of a timm-layout ViT state_dict; None if not one."""
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        return None
    width = int(state["patch_embed.proj.weight"].shape[0])
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    tokens = int(state["pos_embed"].shape[1]) - (1 if "cls_token" in state else 0)
    depth = count_indices(list(state), r"^blocks\.(\d+)\.")
    variant = next((n for n, (d, dp, _) in VIT_VARIANTS.items() if d == width and dp == depth), None)
    num_heads = next((h for d, _, h in VIT_VARIANTS.values() if d == width), max(1, width // 64))
    return {"family": "vit", "arch": "vit_csra", "embed_dim": width, "depth": depth, "num_heads": num_heads,
            "patch_size": patch, "base_size": round(tokens**0.5) * patch, "variant": variant}


def preset_from_config(config: dict[str, Any], name: str) -> Preset:
    """A ViT-CSRA preset at the checkpoint's base size (other sizes served by resampling) for an inferred config."""
    args = {k: config[k] for k in ("embed_dim", "depth", "num_heads", "patch_size", "base_size")}
    return inferred_preset(config, name, args, config["base_size"], dynamic_size=True)


def matches(preset: Preset, config: dict[str, Any]) -> bool:
    """Whether a preset is a ViT-CSRA of the inferred variant."""
    return preset.arch == "vit_csra" and preset.arch_args.get("variant") == config.get("variant")


register_family(Family("vit", ("vit_csra",), recognise, preset_from_config, matches, lam=VIT_LAM))


def _vit(name: str, variant: str, classes: tuple[str, ...], heads: int, lam: float, desc: str,
         mean: tuple[float, float, float] = ZERO_MEAN, std: tuple[float, float, float] = UNIT_STD) -> None:
    register_preset(Preset(name, Task.CLASSIFICATION, "vit_csra", {"variant": variant}, classes, 224,
                           mean=mean, std=std, heads=heads, lam=lam, dynamic_size=True, description=desc))


_vit("msl-v-voc", "L/16", VOC_CLASSES, 1, 0.3, "MSL-V ViT-L/16 + CSRA, VOC2007")
_vit("msl-v-coco", "L/16", COCO_CLASSES, 8, 1.0, "MSL-V ViT-L/16 + CSRA, COCO 2014")
_vit("msl-v-wider", "L/16", WIDER_ATTRIBUTES, 1, 0.3, "MSL-V ViT-L/16 + CSRA, WIDER-Attribute (msl_v_wider.pth)",
     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_vit("vit-tiny-csra", "tiny-test", EMBEDDED_CLASSES, 1, 0.3, "Tiny ViT/16 + CSRA (dim 64, depth 2) for tests")
