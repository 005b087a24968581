"""Pieces both trainers share: seeding, SGD with a 10x head, warm-up + step decay, checkpoints, logs."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import models
from common.kinds import Task
from models.pretrained import load_pretrained, load_trunk


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_run(args: argparse.Namespace) -> Path:
    """A trainer's first steps: seed everything, cap torch's threads if ``--threads``, create ``--out``; return it."""
    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def head_parameter_names(model: nn.Module) -> set[str]:
    """Parameters of the task head get the 10x rate: the model's own list, else everything named ``classifier``."""
    if hasattr(model, "head_parameter_names"):
        return model.head_parameter_names()
    return {n for n, _ in model.named_parameters() if n.startswith("classifier.")}


def make_sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
             head_lr_mult: float = 10.0) -> torch.optim.SGD:
    """SGD with the backbone at ``lr`` and the head at ``head_lr_mult * lr`` (CSRA; see docs/papers.md)."""
    head = head_parameter_names(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # frozen trunk blocks stay out
    groups = [
        {"params": [p for n, p in trainable if n not in head], "lr": lr, "base_lr": lr},
        {"params": [p for n, p in trainable if n in head], "lr": lr * head_lr_mult,
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


def normalise(images: torch.Tensor, preset: models.Preset) -> torch.Tensor:
    """Apply the preset's mean/std to [0, 1] images (identity for VOC/COCO presets)."""
    mean = torch.tensor(preset.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(preset.std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA device asked for but absent is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on ``device`` in channels_last memory (faster convolutions: under bf16 on CUDA, and oneDNN's on
    the CPU, where an MSL step of the demo classifier takes 0.74x the time)."""
    return model.to(device, memory_format=torch.channels_last)


def batch_to(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of images on ``device`` in channels_last memory (see ``to_device``)."""
    return images.to(device, non_blocking=device.type == "cuda").contiguous(memory_format=torch.channels_last)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing elsewhere (CPU runs stay float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def step_batches(n: int, batch: int, seed: int, first_step: int = 0) -> Iterator[list[tuple[int, int]]]:
    """Batches of ``(epoch, index)`` as a function of the step alone: any run reaching step s sees batch s.

    Epoch e is a permutation of ``range(n)`` seeded by ``(seed, e)``, cut into ``n // batch`` batches;
    a run started at ``first_step`` continues exactly where another run would be at that step.
    """
    per_epoch = n // batch
    if per_epoch < 1:
        raise ValueError(f"a batch of {batch} needs at least {batch} scenes per pass, got {n}")
    step = first_step
    while True:
        epoch, i = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        yield [(epoch, int(k)) for k in order[i * batch:(i + 1) * batch]]
        step += 1


def frozen_blocks_override(preset: str, frozen_blocks: int | None) -> dict[str, int] | None:
    """``arch_args`` that set how many trunk blocks stay fixed (``--frozen-blocks``), or None for the preset's."""
    if frozen_blocks is None:
        return None
    if "frozen_blocks" not in models.get_preset(preset).arch_args:
        raise ValueError(f"--frozen-blocks: preset {preset!r} has no trunk blocks to freeze (MobileNetV2 presets do)")
    return {"frozen_blocks": frozen_blocks}


def initialise_trunk(model: nn.Module, init: str | None, pretrained: bool = True) -> str:
    """Load ``init`` into the trunk, else the preset's packaged weights (unless disabled); say what happened."""
    if init:
        message = load_trunk(model, init).summary()
    elif pretrained and model.preset.pretrained:
        message = load_pretrained(model, model.preset.pretrained).summary()
    else:
        message = "trunk starts from random weights"
    tqdm.write(message)
    return message


def streaming_sets(data_dir: str | Path, seed: int, per_epoch: int, val_size: int, task: str,
                   image_size: int, pool: str | Path | None = None, epochs: int = 1) -> tuple[Any, list]:
    """Fresh training scenes per epoch plus a fixed in-memory validation set, of the kind ``data_dir`` holds.

    With ``pool`` the first ``epochs`` epochs of the stream come from a pre-rendered pool under that folder.
    """
    from training.datasets.streaming import ScenePool, StreamingScenes, validation_scenes
    from training.datasets.synthetic import config_from_description

    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        raise ValueError(f"--stream needs an embedded dataset folder (with dataset.json); {path} not found")
    config = config_from_description(json.loads(path.read_text()))
    tqdm.write(f"streaming {per_epoch} fresh scenes per epoch (seed {seed}); rendering {val_size} validation scenes")
    scenes = ScenePool(pool, config, seed, per_epoch, max(1, epochs), maps=task == Task.SEGMENTATION) if pool else None
    return (StreamingScenes(config, seed, per_epoch, task, image_size, pool=scenes),
            validation_scenes(config, seed, val_size, task, image_size))
