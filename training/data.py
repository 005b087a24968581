"""Datasets for the trainers: train / val / test splits from the embedded folder, VOC, COCO or JSON lists.

``classification_datasets(data, image_size)`` and ``segmentation_datasets(data, image_size)`` detect
the source from the path and return a ``SplitDatasets``:

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
import json
import random
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from models.segmenters import VOC_SEGMENTATION_CLASSES
from robustness.labels import COCO_CLASSES, VOC_CLASSES, WIDER_ATTRIBUTES
from training.datasets import (
    COCOClassification,
    JSONListClassification,
    MultiLabelImages,
    VOC2007Classification,
    VOCSegmentation,
    eval_transform,
    train_transform,
)

CLASSIFICATION_LAYOUTS = ("a folder with train.json + test.json (embedded dataset, reference JSON lists), "
                          "a reference JSON list file, a VOCdevkit / VOC2007 / VOC2012 folder, "
                          "or a COCO instances JSON such as annotations/instances_train2014.json")
SEGMENTATION_LAYOUTS = ("a VOCdevkit / VOC2007 / VOC2012 folder, or a VOC-style folder with "
                        "ImageSets/Segmentation/{train,test or val}.txt, JPEGImages, SegmentationClass "
                        "and SegmentationObject (the embedded dataset, PASCAL-B)")
VOC_YEARS = ("VOC2007", "VOC2012")


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


def _description(root: Path) -> dict:
    path = root / "dataset.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _require_exists(path: Path, layouts: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path} (make the embedded one with "
                                f"`python -m training make-dataset`, or pass {layouts})")
    return path


def _unknown_layout(path: Path, layouts: str) -> ValueError:
    return ValueError(f"{path}: not a dataset layout this loader knows; accepted: {layouts}")


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


def _voc_year(path: Path, needs: str, prefer: tuple[str, ...]) -> tuple[str, Path] | None:
    """("voc2007" | "voc2012", year folder) for a VOC2007/VOC2012 folder or a VOCdevkit holding one."""
    if path.name in VOC_YEARS:
        return (path.name.lower(), path) if (path / needs).is_dir() else None
    for year in prefer:
        for folder in (path / year, path / "VOCdevkit" / year):
            if (folder / needs).is_dir():
                return year.lower(), folder
    return None


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


def _json_twin(train_file: Path) -> Path:
    """The test list beside a reference training list (trainval_voc07 -> test_voc07, train_coco -> val_coco)."""
    stem = train_file.stem
    candidates = []
    for old, new in (("trainval", "test"), ("train", "test"), ("train", "val")):
        if old in stem:
            at = stem.rfind(old)
            candidates.append(train_file.with_name(stem[:at] + new + stem[at + len(old):] + train_file.suffix))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "a name with 'train' in it to derive one from"
    raise FileNotFoundError(f"test list for {train_file} not found (looked for {looked})")


def _json_list_names(train_file: Path, num_classes: int) -> tuple[str, ...] | None:
    """Class names for a reference JSON list: dataset.json beside it, else VOC/COCO/WIDER by file name and count."""
    names = _description(train_file.parent).get("classes")
    if names is not None:
        if len(names) != num_classes:
            raise ValueError(f"{train_file.parent / 'dataset.json'} names {len(names)} classes but "
                             f"{train_file} has {num_classes} targets")
        return tuple(names)
    hint = train_file.stem.lower()
    for key, known in (("voc", VOC_CLASSES), ("coco", COCO_CLASSES), ("wider", WIDER_ATTRIBUTES)):
        if key in hint and len(known) == num_classes:
            return known
    return None


def _json_lists(train_file: Path, test_file: Path, image_size: int, names: tuple[str, ...] | None
                ) -> tuple[JSONListClassification, JSONListClassification]:
    """Reference JSON lists; without ``names``, class names are looked up (else generic class_0...)."""
    train = JSONListClassification(train_file, image_size, transform=train_transform(image_size), class_names=names)
    if names is None:
        train.class_names = _json_list_names(train_file, len(train.class_names)) or train.class_names
    test = JSONListClassification(test_file, image_size, class_names=train.class_names)
    return train, test


def _coco_image_dir(annotation_file: Path, split: str, image_dir: Path | None) -> Path:
    """The folder holding ``split``'s images: ``image_dir`` (or its ``split`` sibling / child) or the usual layout."""
    if image_dir is not None:
        candidates = [image_dir / split, image_dir.parent / split, image_dir]
    else:
        base = annotation_file.parent.parent if annotation_file.parent.name == "annotations" else annotation_file.parent
        candidates = [base / split, base / "images" / split, annotation_file.parent / split]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"COCO image folder for {split} not found (looked for "
                            f"{', '.join(str(c) for c in dict.fromkeys(candidates))}); pass image_dir")


def _coco(annotation_file: Path, image_size: int, image_dir: Path | None
          ) -> tuple[COCOClassification, COCOClassification]:
    stem = annotation_file.stem
    if "train" not in stem:
        raise ValueError(f"{annotation_file}: pass the COCO training instances file (e.g. instances_train2014.json); "
                         "its val twin beside it becomes the test split")
    at = stem.rfind("train")
    val_stem = stem[:at] + "val" + stem[at + len("train"):]
    val_file = annotation_file.with_name(val_stem + annotation_file.suffix)
    if not val_file.is_file():
        raise FileNotFoundError(f"COCO test split not found: looked for {val_file} beside {annotation_file}")
    train = COCOClassification(annotation_file, _coco_image_dir(annotation_file, stem[at:], image_dir), image_size,
                               transform=train_transform(image_size))
    test = COCOClassification(val_file, _coco_image_dir(annotation_file, val_stem[at:], image_dir), image_size)
    if test.category_ids != train.category_ids:
        raise ValueError(f"{val_file}: categories differ from {annotation_file}")
    return train, test


def _json_start(path: Path) -> str:
    """The first non-blank character of a file ('[' for a JSON list, '{' for a COCO file)."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return chr(head[0]) if head else ""


def classification_datasets(data: str | Path, image_size: int, limit: int | None = None, val_fraction: float = 0.1,
                            seed: int = 0, image_dir: str | Path | None = None) -> SplitDatasets:
    """Train (flip + RandomResizedCrop 0.7-1.0), val (carved from train) and test (stretch resize) sets.

    ``data``: see the module docstring for the layouts; ``image_dir`` only for COCO.
    """
    path = _require_exists(Path(data), CLASSIFICATION_LAYOUTS)
    if path.is_dir() and (path / "train.json").is_file() and (path / "test.json").is_file():
        source = "json"
        names = _description(path).get("classes")
        train, test = _json_lists(path / "train.json", path / "test.json", image_size,
                                  tuple(names) if names is not None else None)
    elif path.is_file() and path.suffix.lower() == ".json":
        if _json_start(path) == "[":
            source = "json"
            train, test = _json_lists(path, _json_twin(path), image_size, None)
        else:
            source = "coco"
            train, test = _coco(path, image_size, Path(image_dir) if image_dir is not None else None)
    elif path.is_dir() and (found := _voc_year(path, "ImageSets/Main", ("VOC2007", "VOC2012"))):
        source, folder = found
        train_split, test_split = ("trainval", "test") if source == "voc2007" else ("train", "val")
        train = VOC2007Classification(folder, train_split, image_size, transform=train_transform(image_size),
                                      difficult="negative")
        test = VOC2007Classification(folder, test_split, image_size, difficult="ignore")
    else:
        raise _unknown_layout(path, CLASSIFICATION_LAYOUTS)
    train, val = _split_classification(train, image_size, limit, val_fraction, seed)
    return SplitDatasets(train, val, test, list(train.class_names), source, path)


# ----------------------------------------------------------------------------------------------- segmentation

def segmentation_datasets(data: str | Path, image_size: int, limit: int | None = None, val_fraction: float = 0.1,
                          seed: int = 0) -> SplitDatasets:
    """Train (joint flip + resized crop), val (carved from train) and test (image resized, maps at original size)."""
    path = _require_exists(Path(data), SEGMENTATION_LAYOUTS)
    if not path.is_dir():
        raise _unknown_layout(path, SEGMENTATION_LAYOUTS)
    lists = path / "ImageSets" / "Segmentation"
    if found := _voc_year(path, "ImageSets/Segmentation", ("VOC2012", "VOC2007")):
        source, root = found
        train_split, test_split, names = "train", "val", VOC_SEGMENTATION_CLASSES
    elif lists.is_dir() and (path / "SegmentationClass").is_dir():
        root, train_split = path, "train"
        test_split = "test" if (lists / "test.txt").is_file() or not (lists / "val.txt").is_file() else "val"
        description = _description(path)
        if description:
            names = description.get("segmentation_classes")
            if names is None:
                raise ValueError(f"{path}/dataset.json lacks 'segmentation_classes'; the class list is needed")
            source = "embedded"
        else:
            names, source = VOC_SEGMENTATION_CLASSES, "voc-style"
    else:
        raise _unknown_layout(path, SEGMENTATION_LAYOUTS)
    train = VOCSegmentation(root, train_split, image_size, train=True, class_names=names)
    test = VOCSegmentation(root, test_split, image_size, train=False, class_names=names)
    val = VOCSegmentation(root, train_split, image_size, train=False, class_names=names)
    train_ids, val_ids = carve_indices(len(train.ids), val_fraction, seed)
    all_ids = train.ids
    val.ids = [all_ids[i] for i in val_ids]
    train.ids = [all_ids[i] for i in train_ids]
    if limit:
        train.ids = train.ids[:limit]
    return SplitDatasets(train, val, test, list(names), source, path)
