"""Datasets for the trainers: train / val / test splits from the embedded folder, VOC, COCO or JSON lists.

``classification_datasets(data, image_size)`` and ``segmentation_datasets(data, image_size)`` detect
the source from the path (``common.datasets.classification_layout`` / ``segmentation_layout``, which the
offline evaluator and the server share, with its annotation parsers) and return a ``SplitDatasets``:

- a folder with ``train.json`` + ``test.json`` (the embedded dataset, or the reference JSON lists;
  class names from ``dataset.json`` "classes" when present), or one reference JSON list file
  (``trainval_voc07.json``: its test twin is found beside it);
- ``VOCdevkit``, ``VOCdevkit/VOC2007`` or ``VOCdevkit/VOC2012``: classification train = trainval,
  test = test for VOC2007 (ternary, difficult ignored), train = train, test = val for VOC2012;
  segmentation from ``ImageSets/Segmentation`` train / val (background + the 20 VOC classes);
- any other VOC-style segmentation folder (the embedded one, PASCAL-B): ``ImageSets/Segmentation``
  train and test (or val), class names from ``dataset.json`` "segmentation_classes" or VOC's;
- a COCO instances file (``annotations/instances_train2014.json``, classification only): images
  from ``train2014/`` beside ``annotations/`` (or ``image_dir``), test = ``instances_val2014.json``.

The validation split is carved out of the TRAINING items (``val_fraction`` of them, at least one,
chosen from ``seed``) and uses the evaluation transform; model selection uses it, never test.
``limit`` keeps the first N training items left after carving.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from common.datasets import ClassificationLayout, classification_layout, json_list_names, segmentation_layout
from training.datasets import (
    COCOClassification,
    JSONListClassification,
    MultiLabelImages,
    VOC2007Classification,
    VOCSegmentation,
    eval_transform,
    train_transform,
)


@dataclass
class SplitDatasets:
    """Train (augmented), val (carved from train, eval transform), test, the class names, and the source.

    ``source`` names the detected layout: "json", "voc2007", "voc2012", "coco" (classification),
    "embedded", "voc-style", "voc2007", "voc2012" (segmentation); ``root`` the folder or file read.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    source: str = "json"
    root: Path | None = None


def carve_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) index lists: ``val_fraction`` of ``range(n)`` (at least 1) drawn from ``seed``, both sorted."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if n < 2:
        raise ValueError(f"{n} training item(s): at least 2 are needed to carve a validation split")
    count = min(n - 1, max(1, round(n * val_fraction)))
    val = sorted(random.Random(seed).sample(range(n), count))
    chosen = set(val)
    return [i for i in range(n) if i not in chosen], val


# --------------------------------------------------------------------------------------------- classification

def _split_classification(train: MultiLabelImages, image_size: int, limit: int | None, val_fraction: float,
                          seed: int) -> tuple[MultiLabelImages, MultiLabelImages]:
    """Move a seeded ``val_fraction`` of ``train``'s items into a val copy with the eval transform."""
    train_ids, val_ids = carve_indices(len(train.items), val_fraction, seed)
    val = copy.copy(train)
    val.items = [train.items[i] for i in val_ids]
    val.transform = eval_transform(image_size)
    train.items = [train.items[i] for i in train_ids]
    if limit:
        train.items = train.items[:limit]
    return train, val


def _json_lists(layout: ClassificationLayout, image_size: int) -> tuple[JSONListClassification, JSONListClassification]:
    """Reference JSON lists; class names from dataset.json or the file name (else generic class_0...)."""
    train = JSONListClassification(layout.train, image_size, transform=train_transform(image_size))
    train.class_names = json_list_names(layout.train, len(train.class_names)) or train.class_names
    test = JSONListClassification(layout.test, image_size, class_names=train.class_names)
    return train, test


def _coco(layout: ClassificationLayout, image_size: int) -> tuple[COCOClassification, COCOClassification]:
    train = COCOClassification(layout.train, layout.coco_images(layout.train_split), image_size,
                               transform=train_transform(image_size))
    test = COCOClassification(layout.test, layout.coco_images(layout.test_split), image_size)
    if test.category_ids != train.category_ids:
        raise ValueError(f"{layout.test}: categories differ from {layout.train}")
    return train, test


def classification_datasets(data: str | Path, image_size: int, limit: int | None = None, val_fraction: float = 0.1,
                            seed: int = 0, image_dir: str | Path | None = None,
                            difficult: str = "negative") -> SplitDatasets:
    """Train (flip + RandomResizedCrop 0.7-1.0), val (carved from train) and test (stretch resize) sets.

    ``data``: see the module docstring for the layouts; ``image_dir`` only for COCO; ``difficult``: what VOC's
    "difficult only" training labels become ("negative", the reference's choice, or "ignore": kept as ternary 0).
    """
    layout = classification_layout(data, image_dir)
    if layout.source == "json":
        train, test = _json_lists(layout, image_size)
    elif layout.source == "coco":
        train, test = _coco(layout, image_size)
    else:
        train = VOC2007Classification(layout.train, layout.train_split, image_size,
                                      transform=train_transform(image_size), difficult=difficult)
        test = VOC2007Classification(layout.test, layout.test_split, image_size, difficult="ignore")
    train, val = _split_classification(train, image_size, limit, val_fraction, seed)
    return SplitDatasets(train, val, test, list(train.class_names), layout.source, layout.root)


# ----------------------------------------------------------------------------------------------- segmentation

def segmentation_datasets(data: str | Path, image_size: int, limit: int | None = None, val_fraction: float = 0.1,
                          seed: int = 0) -> SplitDatasets:
    """Train (joint flip + resized crop), val (carved from train) and test (image resized, maps at original size)."""
    layout = segmentation_layout(data)
    root, names = layout.folder, layout.class_names
    train = VOCSegmentation(root, layout.train_split, image_size, train=True, class_names=names)
    test = VOCSegmentation(root, layout.test_split, image_size, train=False, class_names=names)
    val = VOCSegmentation(root, layout.train_split, image_size, train=False, class_names=names)
    train_ids, val_ids = carve_indices(len(train.ids), val_fraction, seed)
    all_ids = train.ids
    val.ids = [all_ids[i] for i in val_ids]
    train.ids = [all_ids[i] for i in train_ids]
    if limit:
        train.ids = train.ids[:limit]
    return SplitDatasets(train, val, test, list(names), layout.source, layout.root)
