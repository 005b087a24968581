"""Pieces both trainers share: seeding, SGD with a 10x head, warm-up + step decay, checkpoints, logs."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def head_parameter_names(model: nn.Module) -> set[str]:
    """Parameters of the task head get the 10x rate: every model here names it ``classifier``."""
    return {n for n, _ in model.named_parameters() if n.startswith("classifier.")}


def make_sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
             head_lr_mult: float = 10.0) -> torch.optim.SGD:
    """SGD with the backbone at ``lr`` and the head at ``head_lr_mult * lr`` (SPEC §1)."""
    head = head_parameter_names(model)
    groups = [
        {"params": [p for n, p in model.named_parameters() if n not in head], "lr": lr, "base_lr": lr},
        {"params": [p for n, p in model.named_parameters() if n in head], "lr": lr * head_lr_mult,
         "base_lr": lr * head_lr_mult},
    ]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum, weight_decay=weight_decay)


def lr_factor(step: int, warmup_steps: int, decay_steps: list[int], gamma: float = 0.1) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then times ``gamma`` at each decay step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return gamma ** sum(step >= s for s in decay_steps)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Scale every group's base learning rate by ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def save_checkpoint(path: Path, model: nn.Module, **extra: Any) -> None:
    """A project checkpoint: ``state_dict`` plus the preset (so export needs no flags) and trainer state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "preset": model.preset.to_dict(), **extra}, tmp)
    tmp.replace(path)


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Rewrite the JSON list of per-epoch (or per-eval) records with one more entry."""
    records = json.loads(path.read_text()) if path.exists() else []
    records.append(record)
    path.write_text(json.dumps(records, indent=2) + "\n")
