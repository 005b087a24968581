"""MSL-V: timm's VisionTransformer whose patch tokens feed a multi-head CSRA classifier."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from models.csra import MultiHeadCSRA

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
