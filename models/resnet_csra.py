"""MSL-C: a torchvision ResNet trunk with a multi-head CSRA classifier (reference key layout).

Registers the ``resnet_csra`` builder, its presets and the ``resnet`` family (checkpoint recognition, lambda).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from common.kinds import Task
from common.labels import COCO_CLASSES, EMBEDDED_CLASSES, VOC_CLASSES
from models.checkpoint import CheckpointError, count_indices
from models.csra import MultiHeadCSRA
from models.families import inferred_preset
from models.presets import Family, LamDefaults, Preset, register_architecture, register_family, register_preset

RESNET_LAYERS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def resnet_blocks(depth: int) -> tuple[type[BasicBlock] | type[Bottleneck], list[int]]:
    """The torchvision block type and per-stage block counts of a ResNet depth."""
    if depth not in RESNET_LAYERS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth!r}")
    return RESNET_LAYERS[depth]


class ResNetCSRA(ResNet):
    """ResNet without ``avgpool``/``fc``; the CSRA head reads the last feature map."""

    def __init__(self, depth: int = 101, num_classes: int = 20, heads: int = 1, lam: float = 0.1) -> None:
        block, layers = resnet_blocks(depth)
        super().__init__(block, layers)
        del self.fc, self.avgpool
        self.depth = depth
        self.feature_dim = 512 * block.expansion
        self.classifier = MultiHeadCSRA(self.feature_dim, num_classes, heads=heads, lam=lam)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the layer4 feature map (B, D, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits (B, C) for images (B, 3, S, S)."""
        return self.classifier(self.forward_features(x))


def block_kind(block: type[BasicBlock] | type[Bottleneck]) -> str:
    """``"bottleneck"`` or ``"basic"``: the name inferred configs give a block type."""
    return "bottleneck" if block is Bottleneck else "basic"


RESNET_DEPTH_BY_BLOCKS: dict[tuple[str, tuple[int, ...]], int] = {
    (block_kind(block), tuple(layers)): depth for depth, (block, layers) in RESNET_LAYERS.items()
}
# lambda is not stored in weights; reference values (CSRA, docs/papers.md): H=1 (VOC) 0.1, H=6 (COCO) 0.4.
RESNET_LAM = LamDefaults(default=0.1, reference={1: 0.1, 6: 0.4})


@register_architecture("resnet_csra")
def build_resnet_csra(preset: Preset) -> nn.Module:
    """ResNet-CSRA (MSL-C) from a preset."""
    return ResNetCSRA(preset.arch_args["depth"], preset.num_classes, heads=preset.heads, lam=preset.lam)


def recognise(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Depth and block type of a torchvision-layout ResNet state_dict; None if it is not one."""
    if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        return None
    keys = list(state)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    blocks = tuple(count_indices(keys, rf"^layer{i}\.(\d+)\.") for i in range(1, 5))
    depth = RESNET_DEPTH_BY_BLOCKS.get((kind, blocks))
    if depth is None:
        known = "/".join(str(d) for d in RESNET_LAYERS)
        raise CheckpointError(f"ResNet with {kind} blocks {blocks} matches no depth in {known}")
    return {"family": "resnet", "arch": "resnet_csra", "depth": depth, "block": kind}


def preset_from_config(config: dict[str, Any], name: str) -> Preset:
    """A 448 px (MSL-C reference size) ResNet-CSRA preset for an inferred config."""
    return inferred_preset(config, name, {"depth": config["depth"]}, 448, dynamic_size=False)


def matches(preset: Preset, config: dict[str, Any]) -> bool:
    """Whether a preset is a ResNet-CSRA of the inferred depth."""
    return preset.arch == "resnet_csra" and preset.arch_args.get("depth") == config["depth"]


register_family(Family("resnet", ("resnet_csra",), recognise, preset_from_config, matches, lam=RESNET_LAM))


def _resnet(name: str, depth: int, classes: tuple[str, ...], size: int, heads: int, lam: float, desc: str) -> None:
    register_preset(Preset(name, Task.CLASSIFICATION, "resnet_csra", {"depth": depth}, classes, size,
                           heads=heads, lam=lam, description=desc))


_resnet("msl-c-voc", 101, VOC_CLASSES, 448, 1, 0.1, "MSL-C ResNet-101 + CSRA, VOC2007 (msl_c_voc.pth)")
_resnet("msl-c-coco", 101, COCO_CLASSES, 448, 6, 0.4, "MSL-C ResNet-101 + CSRA, COCO 2014 (msl_c_coco.pth)")
_resnet("resnet18-csra", 18, EMBEDDED_CLASSES, 224, 1, 0.1, "Small ResNet-18 + CSRA for the embedded demo")
_resnet("resnet18-csra-128", 18, EMBEDDED_CLASSES, 128, 1, 0.1, "ResNet-18 + CSRA at 128 px for fast tests")
