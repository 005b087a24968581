"""Evaluation protocols for the embedded classification scenes: visible labels under a mask, per-size AP, chance.

The embedded test split is drawn from a seed (``dataset.json``), so every test scene can be rendered again
with its objects (drawn and visible areas, instance ids). That gives what the files alone do not:

- **Visible labels.** A mask hides part of an image; the *original-label* protocol (the MSL supplement's
  Table 6) keeps the clean labels, even for an object the mask hides entirely. The *visible-label* protocol
  relabels the masked image by the dataset's own rule: an instance exists with at least ``min_visible``
  pixels left, and makes its class a label (1) with at least ``label_min_pixels`` pixels and
  ``label_min_fraction`` of its drawn area left; a class with instances that all fail is difficult (0,
  ignored by the metric); without instances it is absent (-1).
- **Per-size AP.** A label's size is the visible area of its largest instance that passes the rule, in COCO's
  buckets at the scene resolution (S < 32^2 <= M < 96^2 <= L). AP for bucket B counts the images where the
  class's label is of size B as positives, the images without the class as negatives, and ignores the rest.
- **Chance.** The mAP of a scorer that knows nothing, counted as the metric counts: per class, its positives
  over its decided (non-difficult) images, classes without a positive left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.labels import size_bucket
from robustness.masks import resize_mask
from training.datasets.scenes import Scene, SceneConfig, render_scene
from training.datasets.synthetic import config_from_description, scene_rng

SIZES = ("S", "M", "L")


def render_test_scenes(data: str | Path, count: int | None = None) -> tuple[list[Scene], SceneConfig]:
    """The embedded test split's scenes, rendered again from the seed in ``dataset.json`` (in file order)."""
    description = json.loads((Path(data) / "dataset.json").read_text())
    config = config_from_description(description)
    n = description["splits"]["test"] if count is None else count
    return [render_scene(scene_rng(description["seed"], "test", i), config) for i in range(n)], config


def visible_labels(scene: Scene, config: SceneConfig, hole: np.ndarray | None = None) -> np.ndarray:
    """Ternary labels (1 / 0 difficult / -1 absent) of the scene with ``hole`` (True = hidden, any size) applied."""
    instances = scene.instance_map
    if hole is not None:
        hole = resize_mask(np.asarray(hole, dtype=bool), *instances.shape)
        instances = np.where(hole, 0, instances)
    counts = np.bincount(instances.ravel(), minlength=256)
    out = np.full(len(scene.labels(config)), -1, dtype=np.int8)
    for obj in scene.objects:
        if obj.instance_id == 0:
            continue
        left = int(counts[obj.instance_id])
        if left < config.min_visible:
            continue
        clear = left >= config.label_min_pixels and left >= config.label_min_fraction * obj.drawn_area
        out[obj.class_index] = max(out[obj.class_index], 1 if clear else 0)
    return out


def size_targets(scenes: list[Scene], config: SceneConfig, size: str) -> np.ndarray:
    """(N, C) ternary targets for the AP of labels of one size bucket (S, M or L); see the module docstring."""
    rows = []
    for scene in scenes:
        labels = np.asarray(scene.labels(config), dtype=np.int8)
        largest = np.zeros(len(labels))
        for obj in scene.objects:
            clear = obj.instance_id > 0 and obj.visible_area >= config.label_min_pixels and \
                obj.visible_area >= config.label_min_fraction * obj.drawn_area
            if clear:
                largest[obj.class_index] = max(largest[obj.class_index], obj.visible_area)
        row = np.where(labels == -1, -1, 0).astype(np.int8)
        for c in np.flatnonzero(labels == 1):
            row[c] = 1 if size_bucket(largest[c]) == size else 0
        rows.append(row)
    return np.stack(rows)


def chance_map(targets: np.ndarray) -> float:
    """Percent mAP of a constant scorer, counted as the metric counts (0 = difficult ignored)."""
    targets = np.asarray(targets)
    decided = targets != 0
    positives, counted = (targets == 1).sum(axis=0), decided.sum(axis=0)
    present = positives > 0
    return 100.0 * float(np.mean(positives[present] / counted[present]))
