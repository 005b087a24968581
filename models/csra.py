"""CSRA: class-specific residual attention head (Zhu & Wu, ICCV 2021), reference key layout."""

from __future__ import annotations

import math

import torch
from torch import nn

# Temperatures per head count; the reference code writes 99 for infinity (max pooling).
HEAD_TEMPERATURES: dict[int, list[float]] = {
    1: [1.0],
    2: [1.0, math.inf],
    4: [1.0, 2.0, 4.0, math.inf],
    6: [1.0, 2.0, 3.0, 4.0, 5.0, math.inf],
    8: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, math.inf],
}


class CSRAHead(nn.Module):
    """One head: ``mean_HW(s) + lam * att(s)`` on the per-class-normalised 1x1-conv score map."""

    def __init__(self, in_dim: int, num_classes: int, temperature: float, lam: float) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.lam = float(lam)
        self.head = nn.Conv2d(in_dim, num_classes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map features (B, D, H, W) to logits (B, C)."""
        w_norm = torch.linalg.vector_norm(self.head.weight, dim=1, keepdim=True).transpose(0, 1)
        score = (self.head(x) / w_norm).flatten(2)
        base = score.mean(dim=2)
        if math.isinf(self.temperature) or self.temperature >= 99:
            att = score.amax(dim=2)
        else:
            att = (score * torch.softmax(score * self.temperature, dim=2)).sum(dim=2)
        return base + self.lam * att


class MultiHeadCSRA(nn.Module):
    """H CSRA heads with the reference temperatures; logits are the sum over heads."""

    def __init__(self, in_dim: int, num_classes: int, heads: int = 1, lam: float = 0.1) -> None:
        super().__init__()
        if heads not in HEAD_TEMPERATURES:
            raise ValueError(
                f"CSRA supports heads in {sorted(HEAD_TEMPERATURES)}, got heads={heads!r}"
            )
        self.multi_head = nn.ModuleList(
            CSRAHead(in_dim, num_classes, t, lam) for t in HEAD_TEMPERATURES[heads]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum the logits of every head."""
        logits = self.multi_head[0](x)
        for head in self.multi_head[1:]:
            logits = logits + head(x)
        return logits
