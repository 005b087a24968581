"""MSL-C: a torchvision ResNet trunk with a multi-head CSRA classifier (reference key layout)."""

from __future__ import annotations

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from models.csra import MultiHeadCSRA

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
