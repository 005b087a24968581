"""Training objectives from the seeds: MSL (MSL supplement), the size-weighted CE L_sw and EWC (L_sb supplement §4)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from common.labels import BACKGROUND, EIGHT_CONNECTED, VOID
from robustness.masks import apply_mask

# Reference weights: 0.3 * BCE(clean) + 0.2 * BCE(masked) + 0.5 * MSE(probabilities).
MSL_WEIGHTS = (0.3, 0.2, 0.5)


@dataclass
class MSLLoss:
    """Terms of one MSL step, kept for logging; ``total`` is what is back-propagated."""

    total: torch.Tensor
    clean_bce: torch.Tensor
    masked_bce: torch.Tensor
    consistency: torch.Tensor


@contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with their batch as usual but leave their running statistics untouched.

    Momentum 0 makes ``running = (1 - 0) * running + 0 * batch``; the batch counter is put back too.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(layers, saved, strict=True):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def labelled_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with logits over 0/1 targets, averaged over the entries where ``known`` is true (all when None)."""
    if known is None:
        return F.binary_cross_entropy_with_logits(logits, targets)
    weight = known.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="sum")
    return loss / weight.sum().clamp_min(1.0)


def msl_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, holes: torch.Tensor,
             weights: tuple[float, float, float] = MSL_WEIGHTS, masked_bn: str = "update",
             known: torch.Tensor | None = None) -> MSLLoss:
    """The same network on the clean and the masked image; nothing detached (MSL supplement §3).

    ``images`` are already normalised; ``holes`` (B, H, W) is 1 where the image is hidden, so the
    masked copy is ``images * (1 - holes)``. Targets are 0/1; ``known`` (B, C) leaves the other entries (a VOC
    "difficult" label) out of both BCE terms, while the consistency term covers every class.
    ``masked_bn="clean"`` keeps the BatchNorm running statistics those of the clean pass (the exported model
    sees clean images); ``"update"`` lets the masked pass fold its statistics in as well.
    """
    if masked_bn not in ("update", "clean"):
        raise ValueError(f"masked_bn must be 'update' or 'clean', got {masked_bn!r}")
    clean = model(images)
    if masked_bn == "clean":
        with frozen_batchnorm_statistics(model):
            masked = model(apply_mask(images, holes))
    else:
        masked = model(apply_mask(images, holes))
    l1 = labelled_bce(clean, targets, known)
    l2 = labelled_bce(masked, targets, known)
    l3 = F.mse_loss(torch.sigmoid(clean), torch.sigmoid(masked))
    w1, w2, w3 = weights
    return MSLLoss(w1 * l1 + w2 * l2 + w3 * l3, l1, l2, l3)


def size_weights(label_map: np.ndarray, tau: float = 5.0, ignore_index: int = VOID,
                 background: int = BACKGROUND) -> np.ndarray:
    """L_sw pixel weights for one (H, W) label map: ``min(tau, N_fg / |C|)`` per 8-connected component.

    Background pixels weigh 1; ignored pixels weigh 0 so they drop out of ``sum(w * CE) / sum(w)``.
    """
    label_map = np.asarray(label_map)
    weights = np.ones(label_map.shape, dtype=np.float32)
    weights[label_map == ignore_index] = 0.0
    foreground = (label_map != background) & (label_map != ignore_index)
    n_fg = int(foreground.sum())
    if n_fg == 0:
        return weights
    for cls in np.unique(label_map[foreground]):
        components, count = ndimage.label(label_map == cls, structure=EIGHT_CONNECTED)
        sizes = np.bincount(components.ravel(), minlength=count + 1).astype(np.float64)
        per_component = np.minimum(tau, n_fg / np.maximum(sizes, 1.0))
        mask = components > 0
        weights[mask] = per_component[components[mask]]
    return weights


def batch_size_weights(labels: torch.Tensor, tau: float = 5.0, ignore_index: int = VOID) -> torch.Tensor:
    """``size_weights`` for a (B, H, W) batch of label maps, as a float tensor on the labels' device."""
    maps = labels.detach().cpu().numpy()
    stacked = np.stack([size_weights(m, tau, ignore_index) for m in maps])
    return torch.from_numpy(stacked).to(labels.device)


def size_balanced_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                     ignore_index: int = VOID) -> torch.Tensor:
    """``sum(w * CE) / sum(w)`` over valid pixels (L_sw, the L_sb paper)."""
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    weights = weights * (labels != ignore_index)
    return (weights * ce).sum() / weights.sum().clamp_min(1e-12)


class EWC:
    """EWC as the L_sb supplement's eq. 1 writes it: ``sum_i lam/2 F_i (theta_i - theta*_i)^2``.

    F is the diagonal Fisher estimate, unnormalised: during the CE phase ``accumulate(model)`` after each
    backward keeps a running mean of squared gradients; ``consolidate(model)`` at the switch freezes theta*
    and F. ``penalty(model)`` is then added to the loss; its gradient is ``lam * F * (theta - theta*)``.
    """

    def __init__(self, lam: float = 500.0) -> None:
        self.lam = lam
        self.steps = 0
        self.squared_grads: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def accumulate(self, model: nn.Module) -> None:
        """Fold the current gradients into the running mean of squared gradients."""
        self.steps += 1
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            g2 = p.grad.detach().float() ** 2
            if name not in self.squared_grads:
                self.squared_grads[name] = g2.clone()
            else:
                self.squared_grads[name] += (g2 - self.squared_grads[name]) / self.steps

    def consolidate(self, model: nn.Module) -> None:
        """Freeze theta* = current parameters and F = the mean squared gradient, as accumulated."""
        if not self.squared_grads:
            raise ValueError("EWC.consolidate: no gradients accumulated before the switch")
        self.fisher = {n: g.clone() for n, g in self.squared_grads.items()}
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.fisher}

    @property
    def active(self) -> bool:
        """True once consolidated."""
        return bool(self.fisher)

    def max_curvature(self, names: set[str] | None = None) -> float:
        """Largest ``lam * F_i`` (over ``names`` if given): SGD with momentum m is stable for lr * this < 2 (1 + m)."""
        values = [float(f.max()) for n, f in self.fisher.items() if names is None or n in names]
        return self.lam * max(values, default=0.0)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The EWC term for the model's current parameters (zero before ``consolidate``)."""
        params = dict(model.named_parameters())
        device = next(model.parameters()).device
        total = torch.zeros((), device=device)
        for name, fisher in self.fisher.items():
            total = total + (fisher * (params[name] - self.anchor[name]) ** 2).sum()
        return 0.5 * self.lam * total
