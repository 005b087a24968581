"""Datasets: the embedded procedural benchmark and loaders for VOC, COCO and the reference JSON lists."""

from common.label_png import read_label_png
from training.datasets.classification import (
    COCOClassification,
    JSONListClassification,
    MultiLabelImages,
    VOC2007Classification,
    eval_transform,
    split_ternary,
    train_transform,
)
from training.datasets.palette import save_label_png
from training.datasets.segmentation import JointAugment, VOCSegmentation, keep_maps_collate
from training.datasets.synthetic import make_dataset

__all__ = [
    "COCOClassification",
    "JSONListClassification",
    "JointAugment",
    "MultiLabelImages",
    "VOC2007Classification",
    "VOCSegmentation",
    "eval_transform",
    "keep_maps_collate",
    "make_dataset",
    "read_label_png",
    "save_label_png",
    "split_ternary",
    "train_transform",
]
