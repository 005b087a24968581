"""Segmenters: DeepLab-V2 (dilated ResNet + ASPP 6/12/18/24) and torchvision's FCN and DeepLabV3.

Every segmenter maps images (B, 3, H, W) to per-class logits (B, C, H, W) at the input
resolution (bilinear, align_corners=False), for any H and W: no pooling to a fixed grid other
than 1x1 (DeepLabV3's image-level branch), and no Python branching on shapes, so torch.export and
the dynamo ONNX exporter keep H and W dynamic. Class 0 is "background".

Normalisation: ImageNet mean/std, as torchvision's segmentation references and the ImageNet
trunks a user may plug in expect. Key layout: ``backbone.*`` (torchvision ResNet names) and
``classifier.*``; the torchvision models keep their own names minus the auxiliary head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import segmentation as tv_segmentation
from torchvision.models.resnet import ResNet

from common.kinds import Task
from common.labels import EMBEDDED_CLASSES, VOC_CLASSES
from models.presets import IMAGENET_MEAN, IMAGENET_STD, Preset, register_architecture, register_preset
from models.resnet_csra import resnet_blocks

DEEPLABV2_RATES = (6, 12, 18, 24)
EMBEDDED_SEGMENTATION_CLASSES = ("background", *EMBEDDED_CLASSES)
VOC_SEGMENTATION_CLASSES = ("background", *VOC_CLASSES)
LAYER_DILATIONS = {8: (2, 4), 16: (1, 2), 32: (1, 1)}  # output stride -> dilation of layer3, layer4


def dilate_layer(layer: nn.Module, dilation: int) -> None:
    """Turn a ResNet stage's stride into dilation: strides -> 1, every 3x3 conv dilated (DeepLab-V2 style)."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride == (2, 2):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (dilation, dilation), (dilation, dilation)


class DilatedResNet(ResNet):
    """A torchvision ResNet trunk (no avgpool/fc) with layer3/layer4 dilated to reach ``output_stride``."""

    def __init__(self, depth: int = 101, output_stride: int = 8) -> None:
        if output_stride not in LAYER_DILATIONS:
            raise ValueError(f"output_stride must be one of {sorted(LAYER_DILATIONS)}, got {output_stride!r}")
        block, layers = resnet_blocks(depth)
        super().__init__(block, layers)
        del self.fc, self.avgpool
        self.output_stride = output_stride
        self.feature_dim = 512 * block.expansion
        for layer, dilation in zip((self.layer3, self.layer4), LAYER_DILATIONS[output_stride], strict=True):
            if dilation > 1:
                dilate_layer(layer, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the layer4 feature map (B, D, H/os, W/os)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ASPPV2(nn.Module):
    """DeepLab-V2 classifier: parallel 3x3 convs D -> C with dilations 6/12/18/24, outputs summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = DEEPLABV2_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the branch score maps (B, C, h, w)."""
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class DeepLabV2(nn.Module):
    """DeepLab-V2: dilated ResNet + ASPP-V2, logits upsampled bilinearly to the input size."""

    def __init__(self, depth: int = 101, num_classes: int = 21, output_stride: int = 8,
                 rates: tuple[int, ...] = DEEPLABV2_RATES) -> None:
        super().__init__()
        self.backbone = DilatedResNet(depth, output_stride)
        self.classifier = ASPPV2(self.backbone.feature_dim, num_classes, tuple(rates))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (B, C, H, W) for images (B, 3, H, W)."""
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


TORCHVISION_BUILDERS = {
    ("fcn", "resnet50"): tv_segmentation.fcn_resnet50,
    ("fcn", "resnet101"): tv_segmentation.fcn_resnet101,
    ("deeplabv3", "resnet50"): tv_segmentation.deeplabv3_resnet50,
    ("deeplabv3", "resnet101"): tv_segmentation.deeplabv3_resnet101,
}


class TorchvisionSegmenter(nn.Module):
    """torchvision FCN / DeepLabV3 (random init, no auxiliary head) returning a logits tensor, not a dict."""

    def __init__(self, kind: str = "deeplabv3", backbone: str = "resnet50", num_classes: int = 21) -> None:
        super().__init__()
        if (kind, backbone) not in TORCHVISION_BUILDERS:
            known = ", ".join(f"{k}/{b}" for k, b in TORCHVISION_BUILDERS)
            raise ValueError(f"unknown torchvision segmenter {kind}/{backbone}; known: {known}")
        model = TORCHVISION_BUILDERS[kind, backbone](weights=None, weights_backbone=None,
                                                    num_classes=num_classes, aux_loss=False)
        self.kind = kind
        self.backbone, self.classifier = model.backbone, model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (B, C, H, W) for images (B, 3, H, W)."""
        logits = self.classifier(self.backbone(x)["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_architecture("deeplabv2")
def build_deeplabv2(preset: Preset) -> nn.Module:
    """DeepLab-V2 from a preset: arch_args ``depth``, ``output_stride``, optional ``rates``."""
    args = preset.arch_args
    return DeepLabV2(args.get("depth", 101), preset.num_classes, args.get("output_stride", 8),
                     tuple(args.get("rates", DEEPLABV2_RATES)))


@register_architecture("torchvision_segmentation")
def build_torchvision_segmenter(preset: Preset) -> nn.Module:
    """torchvision FCN / DeepLabV3 from a preset: arch_args ``kind`` (fcn|deeplabv3), ``backbone``."""
    args = preset.arch_args
    return TorchvisionSegmenter(args.get("kind", "deeplabv3"), args.get("backbone", "resnet50"), preset.num_classes)


def _segmenter(name: str, arch: str, arch_args: dict, classes: tuple[str, ...], size: int, desc: str) -> None:
    register_preset(Preset(name, Task.SEGMENTATION, arch, arch_args, classes, size, mean=IMAGENET_MEAN,
                           std=IMAGENET_STD, dynamic_size=True, description=desc))


_segmenter("deeplabv2-r18", "deeplabv2", {"depth": 18, "output_stride": 8}, EMBEDDED_SEGMENTATION_CLASSES, 224,
           "Small DeepLab-V2 (ResNet-18, output stride 8, ASPP 6/12/18/24) for the embedded demo")
_segmenter("deeplabv2-r18-os16", "deeplabv2", {"depth": 18, "output_stride": 16}, EMBEDDED_SEGMENTATION_CLASSES,
           224, "DeepLab-V2 ResNet-18 at output stride 16: about 2x cheaper, coarser for small objects")
_segmenter("deeplabv2-r101", "deeplabv2", {"depth": 101, "output_stride": 8}, VOC_SEGMENTATION_CLASSES, 321,
           "DeepLab-V2 as in the paper (ResNet-101, output stride 8, ASPP 6/12/18/24), VOC 21 classes")
_segmenter("fcn-r50", "torchvision_segmentation", {"kind": "fcn", "backbone": "resnet50"},
           EMBEDDED_SEGMENTATION_CLASSES, 224, "torchvision FCN-ResNet50 (output stride 8), embedded classes")
_segmenter("deeplabv3-r50", "torchvision_segmentation", {"kind": "deeplabv3", "backbone": "resnet50"},
           EMBEDDED_SEGMENTATION_CLASSES, 224, "torchvision DeepLabV3-ResNet50 (output stride 8), embedded classes")
