"""MobileNetV2 models on torchvision's ImageNet trunk: an MSL recognizer (CSRA head), a DeepLab-style segmenter,
and the ImageNet classifier as it is (single-label, softmax).

The trunk keeps torchvision's ``features.N`` layout, so torchvision's ImageNet state_dict loads into it
strictly (``models.pretrained``). ``frozen_blocks`` keeps the first N blocks of the trunk fixed while
fine-tuning (no gradients, BatchNorm in eval mode): the stem and the first stages are generic edge and
colour detectors, and not back-propagating through the high-resolution layers more than halves the cost
of a training step on a CPU.

Registers the three builders, their presets and the ``mobilenetv2`` family (checkpoint recognition).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
from torchvision.models.segmentation.deeplabv3 import ASPP

from common.kinds import Activation, Task
from common.labels import EMBEDDED_CLASSES, generic_class_names
from models.checkpoint import csra_head_config
from models.csra import MultiHeadCSRA
from models.presets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Family,
    Preset,
    get_preset,
    register_architecture,
    register_family,
    register_preset,
)

IMAGENET_CLASSES: tuple[str, ...] = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
MOBILENET_V2_IMAGENET = "torchvision-mobilenet_v2-imagenet1k"
LOW_LEVEL_BLOCKS = 4  # features[:4] ends at stride 4 with 24 channels (the DeepLabV3+ skip)
STRIDE_BLOCKS = {8: 7, 16: 14}  # output stride -> the block whose stride 2 would pass it (dilated from there on)
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}


def freeze_blocks(blocks: nn.Sequential, count: int) -> list[nn.Module]:
    """Stop gradients through the first ``count`` blocks and return them (to keep in eval mode)."""
    if not 0 <= count <= len(blocks):
        raise ValueError(f"frozen_blocks must lie in 0..{len(blocks)}, got {count}")
    frozen = list(blocks[:count])
    for block in frozen:
        block.requires_grad_(False)
    return frozen


class FrozenTrunkMixin(nn.Module):
    """``train()`` that leaves frozen blocks in eval mode, so their BatchNorm statistics stay ImageNet's."""

    frozen: list[nn.Module]

    def train(self, mode: bool = True) -> FrozenTrunkMixin:
        """Set training mode everywhere except the frozen blocks."""
        super().train(mode)
        for block in self.frozen:
            block.eval()
        return self


def dilate_blocks(blocks: nn.Sequential, dilation: int) -> None:
    """Turn the strides of these inverted-residual blocks into dilation of their depthwise 3x3 convs."""
    for module in blocks.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            module.stride = (1, 1)
            module.dilation, module.padding = (dilation, dilation), (dilation, dilation)


class MobileNetV2CSRA(FrozenTrunkMixin):
    """MobileNetV2 features (1280 channels at stride 32) + multi-head CSRA: an MSL recognizer."""

    def __init__(self, num_classes: int, heads: int = 1, lam: float = 0.1, frozen_blocks: int = 0,
                 output_stride: int = 32) -> None:
        super().__init__()
        self.features = mobilenet_v2().features
        if output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {output_stride!r}")
        if output_stride == 16:  # a finer score map for CSRA: the last stride becomes dilation
            dilate_blocks(self.features[STRIDE_BLOCKS[16]:18], 2)
        self.frozen = freeze_blocks(self.features, frozen_blocks)
        self.classifier = MultiHeadCSRA(1280, num_classes, heads=heads, lam=lam)

    def trunk(self) -> nn.Module:
        """The part ImageNet weights initialise."""
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits (B, C) for images (B, 3, H, W)."""
        return self.classifier(self.features(x))


class DeepLabMobileNetV2(FrozenTrunkMixin):
    """DeepLabV3+-style segmenter: dilated MobileNetV2 (output stride 8 or 16), ASPP with image pooling, and a
    light decoder that adds the stride-4 features back so that small objects keep their outline."""

    def __init__(self, num_classes: int, output_stride: int = 16, frozen_blocks: int = 0,
                 aspp_channels: int = 128, decoder_channels: int = 96) -> None:
        super().__init__()
        if output_stride not in STRIDE_BLOCKS:
            raise ValueError(f"output_stride must be one of {sorted(STRIDE_BLOCKS)}, got {output_stride!r}")
        features = mobilenet_v2().features[:18]  # drop the 1x1 conv to 1280: ASPP reads the 320 channels
        if output_stride == 8:
            dilate_blocks(features[STRIDE_BLOCKS[8]:STRIDE_BLOCKS[16]], 2)
        dilate_blocks(features[STRIDE_BLOCKS[16]:], 2 * (16 // output_stride))
        self.backbone = features
        self.frozen = freeze_blocks(self.backbone, frozen_blocks)
        self.output_stride = output_stride
        self.aspp = ASPP(320, list(ASPP_RATES[output_stride]), aspp_channels)
        self.low_level = nn.Sequential(nn.Conv2d(24, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        merged = aspp_channels + 48
        self.classifier = nn.Sequential(
            nn.Conv2d(merged, merged, 3, padding=1, groups=merged, bias=False), nn.BatchNorm2d(merged),
            nn.ReLU(inplace=True),
            nn.Conv2d(merged, decoder_channels, 1, bias=False), nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(decoder_channels, num_classes, 1),
        )

    def trunk(self) -> nn.Module:
        """The part ImageNet weights initialise."""
        return self.backbone

    def head_parameter_names(self) -> set[str]:
        """Parameters trained at the head rate: everything new on top of the trunk."""
        return {n for n, _ in self.named_parameters() if not n.startswith("backbone.")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (B, C, H, W) for images (B, 3, H, W)."""
        low = self.backbone[:LOW_LEVEL_BLOCKS](x)
        deep = self.aspp(self.backbone[LOW_LEVEL_BLOCKS:](low))
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(torch.cat([deep, self.low_level(low)], dim=1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class MobileNetV2Classifier(nn.Module):
    """torchvision's MobileNetV2 with its own head (keys ``features.*``, ``classifier.1.*``): single-label."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        model = mobilenet_v2(num_classes=num_classes)
        self.features, self.classifier = model.features, model.classifier

    def trunk(self) -> nn.Module:
        """The part ImageNet weights initialise when the class count differs."""
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits (B, C) for images (B, 3, H, W)."""
        pooled = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(pooled)


@register_architecture("mobilenetv2_csra")
def build_mobilenetv2_csra(preset: Preset) -> nn.Module:
    """MobileNetV2 + CSRA from a preset: arch_args ``frozen_blocks``."""
    args = preset.arch_args
    return MobileNetV2CSRA(preset.num_classes, preset.heads, preset.lam, args.get("frozen_blocks", 0),
                           args.get("output_stride", 32))


@register_architecture("deeplab_mobilenetv2")
def build_deeplab_mobilenetv2(preset: Preset) -> nn.Module:
    """DeepLab MobileNetV2 from a preset: arch_args ``output_stride``, ``frozen_blocks``."""
    args = preset.arch_args
    return DeepLabMobileNetV2(preset.num_classes, args.get("output_stride", 16), args.get("frozen_blocks", 0))


@register_architecture("mobilenetv2")
def build_mobilenetv2(preset: Preset) -> nn.Module:
    """torchvision MobileNetV2 classifier from a preset."""
    return MobileNetV2Classifier(preset.num_classes)


def recognise(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """A torchvision-layout MobileNetV2 state_dict, with a CSRA head or torchvision's own; None if not one."""
    if "features.0.0.weight" not in state or "features.18.0.weight" not in state:
        return None
    if csra_head_config(state):
        return {"family": "mobilenetv2", "arch": "mobilenetv2_csra"}
    config: dict[str, Any] = {"family": "mobilenetv2", "arch": "mobilenetv2"}
    if "classifier.1.weight" in state:  # torchvision's own single-label head
        head = state["classifier.1.weight"]
        config.update(task=Task.CLASSIFICATION, heads=1, num_classes=int(head.shape[0]),
                      feature_dim=int(head.shape[1]), activation=Activation.SOFTMAX)
    return config


def preset_from_config(config: dict[str, Any], name: str) -> Preset:
    """The packaged preset of the inferred arch (ImageNet-trained trunk: 224 px, ImageNet statistics), re-headed."""
    arch = config["arch"]
    preset = get_preset("mobilenetv2-csra" if arch == "mobilenetv2_csra" else "imagenet-mobilenetv2")
    return replace(preset, name=name, class_names=generic_class_names(config["num_classes"]), image_size=224,
                   heads=config.get("heads", 1), arch_args={}, pretrained="",
                   description=f"inferred from checkpoint ({arch})")


def matches(preset: Preset, config: dict[str, Any]) -> bool:
    """Whether a preset is a MobileNetV2 with the inferred head (CSRA or torchvision's)."""
    return preset.arch == config["arch"]


register_family(Family("mobilenetv2", ("mobilenetv2_csra", "mobilenetv2"), recognise, preset_from_config, matches))
register_preset(Preset(
    "mobilenetv2-csra", Task.CLASSIFICATION, "mobilenetv2_csra", {"frozen_blocks": 4}, EMBEDDED_CLASSES, 160,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, heads=1, lam=0.1, pretrained=MOBILENET_V2_IMAGENET,
    description="MSL recognizer: ImageNet MobileNetV2 trunk (first 4 blocks frozen) + CSRA (H=1, lambda 0.1)"))
register_preset(Preset(
    "deeplab-mobilenetv2", Task.SEGMENTATION, "deeplab_mobilenetv2", {"output_stride": 16, "frozen_blocks": 4},
    ("background", *EMBEDDED_CLASSES), 160, mean=IMAGENET_MEAN, std=IMAGENET_STD, dynamic_size=True,
    activation=Activation.SOFTMAX, pretrained=MOBILENET_V2_IMAGENET,
    description="L_sb segmenter: dilated ImageNet MobileNetV2 (output stride 16) + ASPP + stride-4 decoder"))
register_preset(Preset(
    "imagenet-mobilenetv2", Task.CLASSIFICATION, "mobilenetv2", {}, IMAGENET_CLASSES, 224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, activation=Activation.SOFTMAX, pretrained=MOBILENET_V2_IMAGENET,
    description="torchvision's ImageNet-1k MobileNetV2 as it is: 1000 classes, single-label (softmax)"))
