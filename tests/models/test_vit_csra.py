"""MSL-V: timm ViT, class token dropped after the final norm, CSRA on the patch grid."""

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import models

VIT_TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2}


def plain_timm(img_size: int) -> VisionTransformer:
    return VisionTransformer(img_size=img_size, patch_size=16, num_classes=0, qkv_bias=True,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6), **VIT_TINY).eval()


def test_reference_key_names() -> None:
    state = models.create_model("msl-v-wider").state_dict()
    assert tuple(state["pos_embed"].shape) == (1, 197, 1024)
    expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                "norm.weight", "norm.bias", "classifier.multi_head.0.head.weight"}
    for n in range(24):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            expected |= {f"blocks.{n}.{part}.weight", f"blocks.{n}.{part}.bias"}
    assert set(state) == expected


def test_224_matches_plain_timm_forward_path() -> None:
    torch.manual_seed(0)
    model = models.create_model("vit-tiny-csra").eval()
    ref = plain_timm(224)
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    ref.load_state_dict(trunk, strict=True)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        tokens = ref.forward_features(x)[:, 1:]
        grid = tokens.transpose(1, 2).reshape(2, 64, 14, 14)
        torch.testing.assert_close(model(x), model.classifier(grid), rtol=1e-5, atol=1e-5)


def test_448_resamples_the_position_grid_bicubically() -> None:
    torch.manual_seed(1)
    model = models.create_model("vit-tiny-csra").eval()
    assert tuple(model.pos_embed.shape) == (1, 197, 64)
    ref = plain_timm(448)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    grid = state["pos_embed"][:, 1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    resampled = F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], resampled.permute(0, 2, 3, 1).reshape(1, 784, 64)], 1)
    ref.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 448, 448)
    with torch.no_grad():
        out = model(x)
        tokens = ref.forward_features(x)[:, 1:]
        expected = model.classifier(tokens.transpose(1, 2).reshape(1, 64, 28, 28))
    assert out.shape == (1, 10)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert model.token_map(x).shape == (1, 64, 28, 28)
