"""Datasets: the embedded procedural benchmark and loaders for VOC, COCO and the reference JSON lists.

The names load on first use (PEP 562), so that importing one torch-free submodule (the scene renderer, the
dataset writer) does not load torch through the loaders."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "read_label_png": "common.label_png",
    "COCOClassification": "training.datasets.classification",
    "JSONListClassification": "training.datasets.classification",
    "MultiLabelImages": "training.datasets.classification",
    "VOC2007Classification": "training.datasets.classification",
    "eval_transform": "training.datasets.classification",
    "split_ternary": "training.datasets.classification",
    "train_transform": "training.datasets.classification",
    "save_label_png": "training.datasets.palette",
    "JointAugment": "training.datasets.segmentation",
    "VOCSegmentation": "training.datasets.segmentation",
    "keep_maps_collate": "training.datasets.segmentation",
    "make_dataset": "training.datasets.synthetic",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
