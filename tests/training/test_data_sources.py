"""training.data: source detection (embedded, JSON lists, VOC2007/2012, COCO), the carved val split, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.labels import EMBEDDED_CLASSES, VOC_CLASSES
from models.segmenters import VOC_SEGMENTATION_CLASSES
from training.data import SplitDatasets, carve_indices, classification_datasets, segmentation_datasets
from training.datasets import make_dataset
from training.datasets.palette import save_label_png

SIZE = 16


def jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (value, 255 - value, 60)).save(path)


def stems(dataset) -> list[str]:
    """Image stems of a classification (items) or segmentation (ids) dataset."""
    return list(dataset.ids) if hasattr(dataset, "ids") else [p.stem for p, _ in dataset.items]


def assert_val_carved_from_train(data: SplitDatasets, n_train_items: int) -> None:
    train, val, test = set(stems(data.train)), set(stems(data.val)), set(stems(data.test))
    assert len(train) + len(val) == n_train_items
    assert val and not train & val and not val & test and not train & test


def write_voc(root: Path, year: str, cls_splits: dict[str, list[str]], seg_splits: dict[str, list[str]]) -> Path:
    """VOCdevkit/<year>: 32x32 JPEGs, class lists (id 1 has 'aeroplane', difficult-only 'bicycle'), seg PNGs."""
    folder = root / "VOCdevkit" / year
    ids = sorted({i for split in (*cls_splits.values(), *seg_splits.values()) for i in split})
    for n, stem in enumerate(ids):
        jpeg(folder / "JPEGImages" / f"{stem}.jpg", 20 * n % 256)
    (folder / "ImageSets/Main").mkdir(parents=True)
    for split, members in cls_splits.items():
        for c, name in enumerate(VOC_CLASSES):
            lines = []
            for n, stem in enumerate(members):
                value = "1" if c == n % 20 else "-1"
                if c == 1 and n == 0:
                    value = "0"  # difficult only
                lines.append(f"{stem} {value:>2}")
            (folder / "ImageSets/Main" / f"{name}_{split}.txt").write_text("\n".join(lines) + "\n")
    for sub in ("ImageSets/Segmentation", "SegmentationClass", "SegmentationObject"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for split, members in seg_splits.items():
        (folder / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{s}\n" for s in members))
        for n, stem in enumerate(members):
            classes = np.zeros((32, 32), dtype=np.uint8)
            classes[4:20, 4:20] = 1 + n % 20
            classes[20, :] = 255
            save_label_png(classes, folder / "SegmentationClass" / f"{stem}.png")
            save_label_png(np.where(classes == 255, 255, classes > 0).astype(np.uint8),
                           folder / "SegmentationObject" / f"{stem}.png")
    return folder


@pytest.fixture
def voc2007(tmp_path: Path) -> Path:
    trainval = [f"{i:06d}" for i in range(1, 9)]
    test = [f"{i:06d}" for i in range(9, 13)]
    write_voc(tmp_path, "VOC2007", {"trainval": trainval, "test": test},
              {"train": trainval[:6], "val": test[:3]})
    return tmp_path


def test_voc2007_classification_trainval_test_with_carved_val(voc2007: Path) -> None:
    for path in (voc2007, voc2007 / "VOCdevkit", voc2007 / "VOCdevkit/VOC2007"):
        data = classification_datasets(path, SIZE, val_fraction=0.25, seed=3)
        assert data.source == "voc2007" and data.class_names == list(VOC_CLASSES)
        assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 4)
        assert_val_carved_from_train(data, 8)
    assert data.test.ternary is True and data.train.ternary is False
    first_test = data.test.targets[0]
    assert first_test[0] == 1 and first_test[1] == 0 and first_test[2] == -1  # 0 = difficult, ignored later
    assert all(t[1] == 0 for s, (_, t) in zip(stems(data.train), data.train.items, strict=True) if s == "000001")
    image, _ = data.val[0]
    assert image.shape == (3, SIZE, SIZE) and torch.equal(image, data.val[0][0])  # eval transform: no augmentation
    assert data.train[0][0].shape == (3, SIZE, SIZE)


def test_val_is_deterministic_per_seed_and_limit_cuts_train_only(voc2007: Path) -> None:
    val_of = {seed: stems(classification_datasets(voc2007, SIZE, val_fraction=0.25, seed=seed).val)
              for seed in range(6)}
    assert stems(classification_datasets(voc2007, SIZE, val_fraction=0.25, seed=0).val) == val_of[0]
    assert len({tuple(v) for v in val_of.values()}) > 1
    small = classification_datasets(voc2007, SIZE, limit=3, val_fraction=0.25, seed=0)
    assert len(small.train) == 3 and stems(small.val) == val_of[0]
    assert len(classification_datasets(voc2007, SIZE, val_fraction=0.01).val) == 1  # at least one item


def test_voc2012_classification_uses_train_and_val(tmp_path: Path) -> None:
    write_voc(tmp_path, "VOC2012", {"train": ["a1", "a2", "a3", "a4"], "val": ["b1", "b2"]}, {})
    data = classification_datasets(tmp_path / "VOCdevkit", SIZE, val_fraction=0.25)
    assert data.source == "voc2012" and (len(data.train), len(data.val), len(data.test)) == (3, 1, 2)
    assert data.test.ternary is True and stems(data.test) == ["b1", "b2"]
    assert_val_carved_from_train(data, 4)


def test_voc_segmentation_train_val_with_carved_val(voc2007: Path) -> None:
    data = segmentation_datasets(voc2007 / "VOCdevkit", SIZE, val_fraction=0.34, seed=1)
    assert data.source == "voc2007" and data.class_names == list(VOC_SEGMENTATION_CLASSES)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 3)
    assert_val_carved_from_train(data, 6)
    assert data.train.train is True and data.val.train is False and data.val.augment is None
    image, classes, instances = data.val[0]
    assert image.shape == (3, SIZE, SIZE) and classes.shape == instances.shape == (32, 32)  # maps kept at 32x32
    assert data.train[0][1].shape == (SIZE, SIZE)
    assert stems(segmentation_datasets(voc2007, SIZE, val_fraction=0.34, seed=1).val) == stems(data.val)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("emb") / "data", 5, 2, image_size=32, seed=2, progress=False)


def test_embedded_folder_gives_json_lists_and_voc_style_segmentation(embedded: Path) -> None:
    data = classification_datasets(embedded, SIZE, val_fraction=0.2)
    assert data.source == "json" and data.class_names == list(EMBEDDED_CLASSES)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 1, 2)
    assert_val_carved_from_train(data, 5)
    seg = segmentation_datasets(embedded, SIZE, limit=2, val_fraction=0.2)
    assert seg.source == "embedded" and seg.class_names == ["background", *EMBEDDED_CLASSES]
    assert (len(seg.train), len(seg.val), len(seg.test)) == (2, 1, 2)
    assert seg.val.train is False


def test_reference_json_list_file_finds_its_test_twin_and_voc_names(tmp_path: Path) -> None:
    for n in range(4):
        jpeg(tmp_path / "img" / f"{n}.jpg", 50 * n)
    target = [1] + [0] * 19
    (tmp_path / "trainval_voc07.json").write_text(json.dumps(
        [{"img_path": f"img/{n}.jpg", "target": target} for n in range(3)]))
    (tmp_path / "test_voc07.json").write_text(json.dumps([{"img_path": "img/3.jpg", "target": [-1] * 19 + [1]}]))
    data = classification_datasets(tmp_path / "trainval_voc07.json", SIZE)
    assert data.source == "json" and data.class_names == list(VOC_CLASSES)
    assert (len(data.train), len(data.val), len(data.test)) == (2, 1, 1) and data.test.ternary is True


def write_coco(path: Path, names: dict[int, str], images: list[tuple[int, str, list[int]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    annotations = [{"id": 100 * image_id + k, "image_id": image_id, "category_id": cat, "bbox": [0, 0, 4, 4],
                    "area": 16, "iscrowd": 0} for image_id, _, cats in images for k, cat in enumerate(cats)]
    path.write_text(json.dumps({
        "categories": [{"id": i, "name": n} for i, n in names.items()],
        "images": [{"id": i, "file_name": f, "width": 32, "height": 32} for i, f, _ in images],
        "annotations": annotations}))


COCO_NAMES = {18: "dog", 1: "person", 3: "car"}


def write_coco_layout(root: Path, train: list, val: list) -> Path:
    """A COCO 2014 folder under ``root``: train2014/ and val2014/ images plus both instances files."""
    for split, images, value in (("train2014", train, 10), ("val2014", val, 200)):
        for _, name, _ in images:
            jpeg(root / "coco" / split / name, value)
        write_coco(root / f"coco/annotations/instances_{split}.json", COCO_NAMES, images)
    return root / "coco"


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    train = [(i, f"COCO_train2014_{i:012d}.jpg", [1, 18] if i % 2 else [3]) for i in range(1, 7)]
    val = [(i, f"COCO_val2014_{i:012d}.jpg", [3]) for i in range(50, 53)]
    return write_coco_layout(tmp_path, train, val)


def test_coco_instances_file_with_its_val_twin(coco: Path) -> None:
    data = classification_datasets(coco / "annotations/instances_train2014.json", SIZE, val_fraction=0.2, seed=5)
    assert data.source == "coco" and data.class_names == ["person", "car", "dog"]
    assert (len(data.train), len(data.val), len(data.test)) == (5, 1, 3)
    assert_val_carved_from_train(data, 6)
    assert data.test.items[0][0] == coco / "val2014/COCO_val2014_000000000050.jpg"
    assert data.test.targets.tolist() == [[0.0, 1.0, 0.0]] * 3
    assert data.val[0][0].shape == (3, SIZE, SIZE)
    moved = coco.parent / "elsewhere"
    moved.mkdir()
    for split in ("train2014", "val2014"):
        (coco / split).rename(moved / split)
    with pytest.raises(FileNotFoundError, match=r"train2014.*pass image_dir"):
        classification_datasets(coco / "annotations/instances_train2014.json", SIZE)
    explicit = classification_datasets(coco / "annotations/instances_train2014.json", SIZE,
                                       image_dir=moved / "train2014")
    assert explicit.test.items[0][0].parent == moved / "val2014"


def test_coco_errors_name_what_was_looked_for(coco: Path) -> None:
    with pytest.raises(ValueError, match="training instances file"):
        classification_datasets(coco / "annotations/instances_val2014.json", SIZE)
    (coco / "annotations/instances_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"instances_val2014\.json"):
        classification_datasets(coco / "annotations/instances_train2014.json", SIZE)


def test_bad_paths_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset not found: .*nowhere.*make-dataset"):
        classification_datasets(tmp_path / "nowhere", SIZE)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        segmentation_datasets(tmp_path / "nowhere", SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a dataset layout.*VOCdevkit.*instances_train2014"):
        classification_datasets(tmp_path / "empty", SIZE)
    with pytest.raises(ValueError, match=r"empty: not a dataset layout.*ImageSets/Segmentation"):
        segmentation_datasets(tmp_path / "empty", SIZE)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        classification_datasets(tmp_path / "notes.txt", SIZE)


def test_carve_indices_bounds() -> None:
    train, val = carve_indices(10, 0.3, seed=0)
    assert len(val) == 3 and sorted(train + val) == list(range(10)) and carve_indices(10, 0.3, seed=0)[1] == val
    assert len(carve_indices(2, 0.9, seed=0)[0]) == 1  # never empties train
    with pytest.raises(ValueError, match="val_fraction"):
        carve_indices(10, 0.0, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        carve_indices(1, 0.1, seed=0)
