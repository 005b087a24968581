"""Train a CSRA recognizer with plain BCE (``baseline``) or MSL (``msl``), torchvision-reference style.

    python -m training classify --data data/classification --preset mobilenetv2-csra --method msl --stream \
        --out runs/msl

The best epoch is chosen on a validation split (carved from training, or fresh scenes when streaming),
never on the test split; the test split is evaluated once, with the chosen weights, at the end. With
``--choose-threshold`` the decision threshold is chosen there too (the one that maximises OF1), kept in the
checkpoint's preset, and so in the exported manifest that servers read.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import models
from common.kinds import Task
from robustness.masks import apply_mask
from robustness.metrics import choose_threshold, multilabel_metrics
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
    streaming_sets,
    to_device,
)
from training.data import classification_datasets
from training.objectives import labelled_bce, msl_loss
from training.occlusion import MaskSource


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, args: argparse.Namespace,
                    epoch: int, steps_per_epoch: int) -> dict[str, float]:
    """One pass over the training set; returns mean loss terms."""
    model.train()
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs} [{args.method}]", leave=False)
    for i, (images, targets) in enumerate(bar):
        step = epoch * steps_per_epoch + i
        set_lr(optimizer, lr_factor(step, args.warmup_epochs * steps_per_epoch,
                                    [e * steps_per_epoch for e in args.decay_epochs]))
        images = normalise(batch_to(images, device), model.preset)
        targets = targets.to(device).float()
        known = targets != 0 if args.leave_out_difficult else None  # ternary 0: difficult only
        targets = targets.clamp_min(0)
        with autocast(device):
            if args.method == "msl":
                holes = args.train_masks.draw(len(images), seed=args.seed * 1_000_003 + step).to(device)
                parts = msl_loss(model, images, targets, holes, masked_bn=args.masked_bn, known=known)
                loss = parts.total
                terms = {"loss": loss.item(), "bce_clean": parts.clean_bce.item(),
                         "bce_masked": parts.masked_bce.item(), "mse": parts.consistency.item()}
            else:
                loss = labelled_bce(model(images).float(), targets, known)
                terms = {"loss": loss.item()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + v
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return {k: v / max(1, len(loader)) for k, v in totals.items()}


@torch.no_grad()
def predict_scores(model: nn.Module, loader: DataLoader, holes: MaskSource | None = None,
                   mask_seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and targets over a loader; with ``holes`` image k gets the mask of seed ``mask_seed + k``."""
    model.eval()
    device = next(model.parameters()).device
    scores, targets, seen = [], [], 0
    for images, target in loader:
        images = normalise(batch_to(images, device), model.preset)
        if holes is not None:
            images = apply_mask(images, holes.one_each(len(images), mask_seed + seen).to(device))
        with autocast(device):
            logits = model(images)
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(target.numpy())
        seen += len(images)
    return np.concatenate(scores), np.concatenate(targets)


def evaluate(model: nn.Module, loader: DataLoader, holes: MaskSource | None) -> dict[str, Any]:
    """Clean metrics, plus the same metrics with one high-ratio mask per test image (supplement Table 6)."""
    result = {"clean": multilabel_metrics(*predict_scores(model, loader), threshold=model.preset.threshold)}
    if holes is not None:
        result["masked"] = multilabel_metrics(*predict_scores(model, loader, holes),
                                              threshold=model.preset.threshold)
    return result


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, loader: DataLoader) -> int:
    """Running statistics of the trainable BatchNorm layers recomputed as plain averages over ``loader``'s images.

    Frozen blocks (eval mode under ``model.train()``) keep theirs, which ``torch.optim.swa_utils.update_bn`` would
    reset. Returns the number of images seen.
    """
    model.train()
    device = next(model.parameters()).device
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    seen = 0
    for images, _ in loader:
        with autocast(device):
            model(normalise(batch_to(images, device), model.preset))
        seen += len(images)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    model.eval()
    return seen


def chosen_threshold(model: nn.Module, val_loader: DataLoader) -> dict[str, Any]:
    """Set the model's threshold to the one that maximises OF1 on the validation split; what was chosen, and why."""
    choice = choose_threshold(*predict_scores(model, val_loader))
    model.preset = dataclasses.replace(model.preset, threshold=choice["threshold"])
    tqdm.write(f"threshold {choice['threshold']:.2f} chosen on val: OF1 {choice['figures']['OF1']:.1f} "
               f"(at 0.5: {choice['at_0.5']['OF1']:.1f})")
    return {**choice, "split": "validation", "images": len(val_loader.dataset)}


def build_model(args: argparse.Namespace, class_names: list[str]) -> nn.Module:
    """The preset with the dataset's classes and the requested input size, its trunk initialised."""
    model = models.create_model(args.preset, class_names=class_names, image_size=args.image_size,
                                arch_args=frozen_blocks_override(args.preset, args.frozen_blocks))
    initialise_trunk(model, args.init, args.pretrained)
    return model


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluating after every epoch; keep the best-by-mAP checkpoint and the last one for resuming."""
    out = start_run(args)
    preset = models.get_preset(args.preset)
    size = args.image_size or preset.image_size
    data = classification_datasets(args.data, size, limit=args.limit, seed=args.seed, difficult=args.difficult)
    train_set, val_set = data.train, data.val
    if args.stream:
        train_set, val_set = streaming_sets(args.data, args.seed, args.stream, args.val_size, Task.CLASSIFICATION,
                                            size, pool=args.pool, epochs=args.epochs)
    ternary = bool(getattr(train_set, "ternary", False))  # binary 0/1 targets have no difficult labels
    args.leave_out_difficult = args.difficult == "ignore" and ternary
    if args.difficult == "ignore" and not ternary:
        tqdm.write("--difficult ignore: these training targets are binary (no difficult labels); nothing is left out")
    device = resolve_device(args.device)
    model = to_device(build_model(args, data.class_names), device)
    args.train_masks = MaskSource(args.mask_ratio, size, args.mask_dir)
    eval_masks = MaskSource(args.eval_mask_ratio, size, args.mask_dir) if args.eval_mask_ratio else None
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                              num_workers=args.workers, generator=generator, persistent_workers=False,
                              pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, batch_size=32)
    test_loader = DataLoader(data.test, batch_size=32, num_workers=args.workers)
    optimizer = make_sgd(model, args.lr)
    start_epoch, best = 0, {"mAP": -1.0, "epoch": -1}
    last = out / "last.pth"
    if args.resume and last.exists():
        state = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        print(f"resumed from {last} at epoch {start_epoch}")
    steps_per_epoch = len(train_loader)
    for epoch in range(start_epoch, args.epochs):
        started = time.perf_counter()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        losses = train_one_epoch(model, train_loader, optimizer, args, epoch, steps_per_epoch)
        metrics = evaluate(model, val_loader, eval_masks)
        record = {"epoch": epoch + 1, "method": args.method, "train": losses, "val": metrics,
                  "seconds": round(time.perf_counter() - started, 1)}
        append_log(out / "log.json", record)
        if metrics["clean"]["mAP"] > best["mAP"]:
            best = {"mAP": metrics["clean"]["mAP"], "epoch": epoch + 1}
            save_checkpoint(out / "best.pth", model, epoch=epoch, val=metrics, method=args.method)
        save_checkpoint(last, model, epoch=epoch, optimizer=optimizer.state_dict(), best=best)
        masked = f", masked {metrics['masked']['mAP']:.1f}" if "masked" in metrics else ""
        tqdm.write(f"epoch {epoch + 1}: loss {losses['loss']:.4f}, val mAP {metrics['clean']['mAP']:.1f}{masked}")
    state = torch.load(out / "best.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    kept = {k: v for k, v in state.items() if k not in ("state_dict", "preset", "test", "threshold_choice")}
    if args.choose_threshold:
        kept["threshold_choice"] = chosen_threshold(model, val_loader)
    test = evaluate(model, test_loader, eval_masks)
    save_checkpoint(out / "best.pth", model, **kept, test=test)
    masked = f", masked {test['masked']['mAP']:.1f}" if "masked" in test else ""
    tqdm.write(f"test (epoch {best['epoch']} chosen on val): mAP {test['clean']['mAP']:.1f}{masked}")
    result = {"best": best, "test": test, "log": str(out / "log.json"), "checkpoint": str(out / "best.pth")}
    if args.clean_bn_copy:
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(0)
        seen = recompute_batchnorm(model, DataLoader(train_set, batch_size=args.batch_size, num_workers=args.workers))
        val = evaluate(model, val_loader, eval_masks)
        clean_test = evaluate(model, test_loader, eval_masks)
        path = out / "best-cleanbn.pth"
        save_checkpoint(path, model, **{**kept, "val": val}, test=clean_test, batchnorm_recomputed_on=seen)
        tqdm.write(f"BatchNorm statistics recomputed on {seen} clean training images: "
                   f"val mAP {val['clean']['mAP']:.1f}, test {clean_test['clean']['mAP']:.1f}")
        result["clean_bn"] = {"best": best, "test": clean_test, "checkpoint": str(path)}
    return result
