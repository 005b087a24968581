"""One trained classifier on the embedded test split: occlusion per bucket under both label protocols,
per-size AP and behavioural checks (``training.protocols`` defines the protocols).

Image k gets the mask of seed ``MASK_SEED + k`` of each bucket, so two models see the same masked tensors.
Behavioural checks, as the robustness lab defines them (CheckList, Ribeiro et al. 2020), counted only on
images whose clean prediction is non-empty (an empty prediction passes both checks without knowing anything):

- invariance: a b3 mask cut to the ground-truth background leaves the predicted label set unchanged;
- direction: hiding 0/25/50/75/100% of a labelled object (a seeded sweep) never raises its class score by
  more than 0.02 between steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.labels import BACKGROUND
from robustness.masks import BUCKETS, apply_mask, resize_mask
from robustness.metrics import multilabel_metrics
from training.common import autocast, batch_to, normalise
from training.datasets.scenes import Scene, SceneConfig
from training.occlusion import MaskSource
from training.protocols import SIZES, size_targets, visible_labels

MASK_SEED = 12345
DIRECTION_TOLERANCE = 0.02
DIRECTION_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def scores_of(model: nn.Module, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Sigmoid scores of normalised-on-the-fly [0, 1] images (N, 3, S, S)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch):
        x = normalise(batch_to(images[start:start + batch], device), model.preset)
        with autocast(device):
            out.append(torch.sigmoid(model(x).float()).cpu().numpy())
    return np.concatenate(out)


def bucket_masks(size: int, n: int) -> dict[str, torch.Tensor]:
    """Per bucket, n masks at the input size; mask k has seed ``MASK_SEED + k``."""
    return {name: MaskSource(name, size).one_each(n, MASK_SEED) for name in BUCKETS}


def occlusion(model: nn.Module, images: torch.Tensor, clean_scores: np.ndarray, scenes: list[Scene],
              config: SceneConfig, masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Metrics clean and per bucket, with the original and the visible labels of each masked image."""
    threshold = model.preset.threshold
    original = np.stack([visible_labels(s, config) for s in scenes])
    result: dict[str, Any] = {"clean": multilabel_metrics(clean_scores, original, threshold, True)}
    for name, holes in masks.items():
        scores = scores_of(model, apply_mask(images, holes))
        visible = np.stack([visible_labels(s, config, h.numpy() > 0) for s, h in zip(scenes, holes, strict=True)])
        result[name] = {"original": multilabel_metrics(scores, original, threshold, True),
                        "visible": multilabel_metrics(scores, visible, threshold, True),
                        "labels_kept": float((visible == 1).sum() / max(1, (original == 1).sum()))}
    return result


def per_size_ap(scores: np.ndarray, threshold: float, scenes: list[Scene], config: SceneConfig) -> dict[str, Any]:
    """Clean mAP restricted to labels of each size (S/M/L), with the number of positive labels behind it."""
    out = {}
    for size in SIZES:
        targets = size_targets(scenes, config, size)
        positives = int((targets == 1).sum())
        out[size] = {"mAP": multilabel_metrics(scores, targets, threshold, True)["mAP"]
                     if positives else float("nan"), "labels": positives}
    return out


def sweep(pixels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of a boolean map ordered along a seeded random direction."""
    rows, cols = np.nonzero(pixels)
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi)
    order = np.argsort(rows * np.sin(angle) + cols * np.cos(angle), kind="stable")
    return rows[order], cols[order]


def behaviour(model: nn.Module, images: torch.Tensor, clean: np.ndarray, scenes: list[Scene],
              config: SceneConfig) -> dict[str, Any]:
    """Invariance and direction checks over images whose clean prediction is non-empty."""
    size, threshold = images.shape[-1], model.preset.threshold
    predicted = clean >= threshold
    tested = np.flatnonzero(predicted.any(axis=1))
    holes = MaskSource("b3", size).one_each(len(images), MASK_SEED + 7_000_000)
    invariance_inputs, invariance_rows, direction = [], [], []
    for k in tested:
        background = resize_mask(scenes[k].class_map == BACKGROUND, size, size)
        hole = holes[k].numpy().astype(bool) & background
        if hole.any():
            invariance_inputs.append(apply_mask(images[k:k + 1], torch.from_numpy(hole[None].astype(np.float32))))
            invariance_rows.append(k)
        labels = scenes[k].labels(config)
        for c in (c for c, v in enumerate(labels) if v == 1):
            pixels = resize_mask(scenes[k].class_map == c + 1, size, size)
            if not pixels.any():
                continue
            rows, cols = sweep(pixels, MASK_SEED + 1000 * k + c)
            steps = []
            for fraction in DIRECTION_FRACTIONS[1:]:
                hole_c = np.zeros((size, size), np.float32)
                n = round(fraction * rows.size)
                hole_c[rows[:n], cols[:n]] = 1
                steps.append(apply_mask(images[k:k + 1], torch.from_numpy(hole_c[None])))
            direction.append((k, c, torch.cat(steps)))
    direction_scores = scores_of(model, torch.cat([d[2] for d in direction])) if direction else np.zeros((0, 1))
    passed_inv = 0
    if invariance_inputs:
        after = scores_of(model, torch.cat(invariance_inputs)) >= threshold
        passed_inv = int(sum(np.array_equal(a, predicted[k]) for a, k in zip(after, invariance_rows, strict=True)))
    passed_dir = 0
    per = len(DIRECTION_FRACTIONS) - 1
    for j, (k, c, _) in enumerate(direction):
        watched = np.concatenate([[clean[k, c]], direction_scores[j * per:(j + 1) * per, c]])
        passed_dir += bool(np.all(np.diff(watched) <= DIRECTION_TOLERANCE))
    return {"images": len(images), "non_empty_clean": len(tested),
            "invariance": {"tested": len(invariance_rows), "passed": passed_inv},
            "direction": {"tested": len(direction), "passed": passed_dir}}


def evaluate_classifier(checkpoint: Path, images: torch.Tensor, scenes: list[Scene], config: SceneConfig,
                        masks: dict[str, torch.Tensor], device: torch.device, checks: int | None = None
                        ) -> dict[str, Any]:
    """Everything above for one best.pth; the behavioural checks on the first ``checks`` images (all if None)."""
    import models

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    preset = state["preset"]
    model = models.create_model(preset["name"], class_names=preset["class_names"], image_size=preset["image_size"])
    model.load_state_dict(state["state_dict"])
    model.to(device)
    clean = scores_of(model, images)
    n = len(images) if checks is None else min(checks, len(images))
    return {"occlusion": occlusion(model, images, clean, scenes, config, masks),
            "per_size": per_size_ap(clean, model.preset.threshold, scenes, config),
            "behaviour": behaviour(model, images[:n], clean[:n], scenes[:n], config)}
