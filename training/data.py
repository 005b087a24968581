"""Datasets for the trainers: the embedded folder (or any folder of the same VOC-style form)."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset

from training.datasets import JSONListClassification, VOCSegmentation, train_transform


def _description(root: Path) -> dict:
    path = root / "dataset.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _require_folder(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root} (make one with `python -m training make-dataset`)")
    return root


def classification_datasets(data_dir: str | Path, image_size: int, limit: int | None = None
                            ) -> tuple[Dataset, Dataset, list[str]]:
    """Train (flip + RandomResizedCrop 0.7-1.0) and test (stretch resize) sets from train.json/test.json."""
    root = _require_folder(Path(data_dir))
    names = _description(root).get("classes")
    train = JSONListClassification(root / "train.json", image_size, transform=train_transform(image_size),
                                   class_names=names)
    test = JSONListClassification(root / "test.json", image_size, class_names=names)
    if limit:
        train.items = train.items[:limit]
    return train, test, list(train.class_names)


def segmentation_datasets(data_dir: str | Path, image_size: int, limit: int | None = None
                          ) -> tuple[Dataset, Dataset, list[str]]:
    """Train (joint flip + resized crop) and test (image resized, maps at original size) segmentation sets."""
    root = _require_folder(Path(data_dir))
    names = _description(root).get("segmentation_classes")
    train = VOCSegmentation(root, "train", image_size, train=True, class_names=names)
    test = VOCSegmentation(root, "test", image_size, train=False, class_names=names)
    if limit:
        train.ids = train.ids[:limit]
    if names is None:
        raise ValueError(f"{root}/dataset.json lacks 'segmentation_classes'; the class list is needed")
    return train, test, list(names)
