"""Train a segmenter with plain CE (``--loss ce``) or CE then L_sw + EWC (``--loss sb``), L_sb supplement §3-4.

    python -m training segment --data data/segmentation --preset deeplab-mobilenetv2 --loss sb --stream 2000 \
        --out runs/sb

Evaluation during training runs on the validation split; the weights kept are those of the best
validation IA-mIoU after the switch (``--keep ia-miou``, the metric L_sb aims at) or the last iterate
(``--keep last``), the same rule for both losses, and the test split is evaluated once with them at the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import models
from common.kinds import Task
from common.labels import VOID
from robustness.metrics import SegmentationMetrics
from training.common import (
    append_log,
    autocast,
    batch_to,
    frozen_blocks_override,
    initialise_trunk,
    lr_factor,
    make_sgd,
    normalise,
    resolve_device,
    save_checkpoint,
    set_lr,
    start_run,
    step_batches,
    streaming_sets,
    to_device,
)
from training.data import segmentation_datasets
from training.objectives import EWC, batch_size_weights, size_balanced_ce


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int) -> dict[str, Any]:
    """mIoU and IA-mIoU (S/M/L) at the label maps' original resolution."""
    model.eval()
    device = next(model.parameters()).device
    metrics = SegmentationMetrics(num_classes)
    for image, class_map, instance_map in dataset:
        with autocast(device):
            logits = model(normalise(batch_to(image[None], device), model.preset)).float()
        if logits.shape[-2:] != class_map.shape[-2:]:
            logits = F.interpolate(logits, size=tuple(class_map.shape[-2:]), mode="bilinear", align_corners=False)
        metrics.update(logits.argmax(1)[0].cpu().numpy(), np.asarray(class_map), np.asarray(instance_map))
    result = metrics.compute()
    return {k: float(result[k]) for k in ("mIoU", "IA-mIoU", "IA_S", "IA_M", "IA_L")}


def segmentation_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, use_sb: bool,
                      tau: float, ewc: EWC | None) -> tuple[torch.Tensor, dict[str, float]]:
    """CE, or (after the switch) size-weighted CE plus the EWC penalty."""
    with autocast(images.device):
        logits = model(images).float()
    if not use_sb:
        loss = F.cross_entropy(logits, labels, ignore_index=VOID)
        return loss, {"ce": loss.item()}
    loss = size_balanced_ce(logits, labels, batch_size_weights(labels, tau))
    terms = {"sw": loss.item()}
    if ewc is not None and ewc.active:
        penalty = ewc.penalty(model)
        loss = loss + penalty
        terms["ewc"] = penalty.item()
    return loss, terms


class StepIndexed(Dataset):
    """A dataset read by ``(epoch, index)`` keys: a streaming set moves to that epoch's scenes first."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class StepBatches:
    """The batch sampler of ``step_batches``: batch s depends on the seed and s only."""

    def __init__(self, n: int, batch: int, seed: int, first_step: int) -> None:
        self.n, self.batch, self.seed, self.first_step = n, batch, seed, first_step

    def __iter__(self):
        return step_batches(self.n, self.batch, self.seed, self.first_step)


def ewc_stability(optimizer: torch.optim.Optimizer, model: nn.Module, ewc: EWC, momentum: float = 0.9
                  ) -> dict[str, float]:
    """Per parameter group: ``lr * max(lam * F)`` against SGD-with-momentum's bound ``2 * (1 + m)``."""
    names = {id(p): n for n, p in model.named_parameters()}
    worst = max((group["lr"] * ewc.max_curvature({names[id(p)] for p in group["params"]})
                 for group in optimizer.param_groups), default=0.0)
    return {"lr_times_curvature": worst, "bound": 2 * (1 + momentum), "stable": worst < 2 * (1 + momentum)}


def save_switch_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                      ewc: EWC) -> None:
    """Everything needed to continue from the switch: weights, optimiser, step and the Fisher statistics."""
    save_checkpoint(path, model, step=step, optimizer=optimizer.state_dict(),
                    ewc={"steps": ewc.steps, "squared_grads": ewc.squared_grads})


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Iteration-based training: CE until the switch (Fisher accumulated), then CE or L_sw + EWC.

    Both losses share the CE phase, so ``--start-from OUT/switch.pth`` lets a second run skip it.
    At the switch every parameter group moves to ``lr * --finetune-lr-factor`` (no 10x head) for both
    losses: EWC's curvature is ``2 * lambda * F`` with F up to 1, and SGD with momentum m is stable only
    for ``lr * 2 * lambda < 2 * (1 + m)``; with lambda = 500 that means lr < 0.0038.
    """
    out = start_run(args)
    size = args.image_size or models.get_preset(args.preset).image_size
    data = segmentation_datasets(args.data, size, limit=args.limit, seed=args.seed)
    train_set, val_set, class_names = data.train, data.val, data.class_names
    if args.stream:
        passes = -(-args.iters // max(1, args.stream // args.batch_size))  # the passes step_batches reaches
        train_set, val_set = streaming_sets(args.data, args.seed, args.stream, args.val_size, Task.SEGMENTATION, size,
                                            pool=args.pool, epochs=passes)
    device = resolve_device(args.device)
    model = models.create_model(args.preset, class_names=class_names, image_size=args.image_size,
                                arch_args=frozen_blocks_override(args.preset, args.frozen_blocks))
    if not args.start_from:
        initialise_trunk(model, args.init, args.pretrained)
    to_device(model, device)
    optimizer = make_sgd(model, args.lr)
    switch = args.switch_iter if args.switch_iter is not None else args.iters // 2
    if not 0 < switch <= args.iters:
        raise ValueError(f"--switch-iter {switch} must lie in 1..{args.iters}")
    ewc = EWC(args.ewc_lambda)
    first = 0
    if args.start_from:
        state = torch.load(args.start_from, map_location=device, weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        ewc.steps, ewc.squared_grads = state["ewc"]["steps"], state["ewc"]["squared_grads"]
        first = state["step"]
    # Batch s is a function of (seed, s): a run continuing from the switch sees the scenes the other arm saw.
    loader = DataLoader(StepIndexed(train_set), batch_sampler=StepBatches(len(train_set), args.batch_size,
                                                                          args.seed, first),
                        num_workers=args.workers, pin_memory=device.type == "cuda")
    batches = iter(loader)
    started = time.perf_counter()
    model.train()
    metrics: dict[str, Any] = {}
    key = {"ia-miou": "IA-mIoU", "last": None}[args.keep]
    best: dict[str, Any] = {"score": -1.0, "iter": None}
    stability: dict[str, float] = {}
    bar = tqdm(range(first, args.iters), desc=f"segment [{args.loss}]", initial=first, total=args.iters)
    for step in bar:
        if step == switch:
            save_switch_state(out / "switch.pth", model, optimizer, step, ewc)
            if args.loss == "sb" and args.ewc_lambda > 0:
                ewc.consolidate(model)
        # After the switch both losses keep the CE phase's rates (10x head included), times the factor.
        set_lr(optimizer, lr_factor(step, args.warmup_iters, []) * (args.finetune_lr_factor if step >= switch else 1))
        if step == switch and ewc.active:
            stability = ewc_stability(optimizer, model, ewc)
            tqdm.write(f"EWC at the switch: lr x max(lambda F) = {stability['lr_times_curvature']:.3g} "
                       f"(SGD momentum 0.9 is stable below {stability['bound']:.1f})")
            if not stability["stable"]:  # measured instability: scale the L_sb phase's rates under the bound
                lr_scale = 0.9 * stability["bound"] / stability["lr_times_curvature"]
                stability["lr_scale"] = lr_scale
                tqdm.write(f"  over the bound: the L_sb phase runs at {lr_scale:.3g} x the baseline's rates")
        if step >= switch and stability.get("lr_scale"):
            for group in optimizer.param_groups:
                group["lr"] *= stability["lr_scale"]
        images, labels, _ = next(batches)
        use_sb = args.loss == "sb" and step >= switch
        loss, terms = segmentation_loss(model, normalise(batch_to(images, device), model.preset),
                                        labels.to(device).long(), use_sb, args.tau, ewc if use_sb else None)
        if not torch.isfinite(loss):
            raise ValueError(f"iteration {step + 1}: the loss is {loss.item()} (diverged; EWC stability at the "
                             f"switch: {stability or 'not active'})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if switch - args.fisher_iters <= step < switch:
            ewc.accumulate(model)
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", phase="sb" if use_sb else "ce")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.iters:
            metrics = evaluate(model, val_set, len(class_names))
            model.train()
            append_log(out / "log.json", {"iter": step + 1, "loss": args.loss, "phase": "sb" if use_sb else "ce",
                                          "train": terms, "val": metrics, "lr": optimizer.param_groups[0]["lr"],
                                          **({"ewc_stability": stability} if stability else {}),
                                          "seconds": round(time.perf_counter() - started, 1)})
            tqdm.write(f"iter {step + 1}: val mIoU {metrics['mIoU']:.3f}, IA-mIoU {metrics['IA-mIoU']:.3f}, "
                       f"IA_S {metrics['IA_S']:.3f}")
            if key and step + 1 > switch and metrics[key] > best["score"]:
                best = {"score": metrics[key], "metric": key, "iter": step + 1}
                save_checkpoint(out / "best.pth", model, iters=step + 1, loss=args.loss, val=metrics)
    if best["iter"] is None:  # --keep last, or no evaluation after the switch: keep the last weights
        best = {"metric": "last", "iter": args.iters}
        save_checkpoint(out / "best.pth", model, iters=args.iters, loss=args.loss, val=metrics)
    chosen = torch.load(out / "best.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(chosen["state_dict"])
    test = evaluate(model, data.test, len(class_names))
    save_checkpoint(out / "final.pth", model, iters=chosen["iters"], loss=args.loss, val=chosen["val"], test=test)
    tqdm.write(f"test (iter {best['iter'] or args.iters} chosen on val): mIoU {test['mIoU']:.3f}, "
               f"IA-mIoU {test['IA-mIoU']:.3f}, IA_S {test['IA_S']:.3f}")
    return {"test": test, "best": best, "checkpoint": str(out / "final.pth"), "log": str(out / "log.json"),
            "ewc_stability": stability}
