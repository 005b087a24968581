"""Classification loaders: VOC2007 class lists, COCO instances JSON, the reference JSON lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from common.labels import VOC_CLASSES
from training.datasets import (
    COCOClassification,
    JSONListClassification,
    VOC2007Classification,
    split_ternary,
    train_transform,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def solid_jpeg(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)


@pytest.fixture
def voc2007(tmp_path: Path) -> Path:
    """A VOCdevkit with images 000001 (aeroplane + difficult-only bicycle) and 000002 (person)."""
    year = tmp_path / "VOCdevkit" / "VOC2007"
    solid_jpeg(year / "JPEGImages/000001.jpg", (40, 30), RED)
    solid_jpeg(year / "JPEGImages/000002.jpg", (20, 50), BLUE)
    labels = {"aeroplane": ("1", "-1"), "bicycle": ("0", "-1"), "person": ("-1", "1")}
    for split in ("trainval", "test"):
        for name in VOC_CLASSES:
            first, second = labels.get(name, ("-1", "-1"))
            lines = f"000001 {first:>2}\n000002 {second:>2}\n"
            (year / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
            (year / "ImageSets/Main" / f"{name}_{split}.txt").write_text(lines)
    return tmp_path / "VOCdevkit"


def test_voc_test_targets_are_ternary_with_difficult_only_as_zero(voc2007: Path) -> None:
    dataset = VOC2007Classification(voc2007, "test", image_size=32)
    image, target = dataset[0]
    expected = -torch.ones(20)
    expected[[0, 1]] = torch.tensor([1.0, 0.0])
    assert dataset.ternary is True
    assert torch.equal(target, expected)
    assert image.shape == (3, 32, 32)
    assert image[0].mean() > 0.97 and image[2].mean() < 0.03  # red, stretched to 32x32, in [0, 1]


def test_voc_trainval_treats_difficult_only_as_negative_like_the_reference(voc2007: Path) -> None:
    dataset = VOC2007Classification(voc2007, "trainval", image_size=16)
    assert dataset.ternary is False
    assert dataset.targets[0, :3].tolist() == [1.0, 0.0, 0.0]
    assert dataset.targets[1].sum().item() == 1.0 and dataset.targets[1, 14].item() == 1.0
    positive = VOC2007Classification(voc2007 / "VOC2007", "trainval", image_size=16, difficult="positive")
    assert positive.targets[0, :3].tolist() == [1.0, 1.0, 0.0]


def test_voc_errors_name_the_missing_file_or_bad_line(voc2007: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"aeroplane_val\.txt"):
        VOC2007Classification(voc2007, "val")
    (voc2007 / "VOC2007/ImageSets/Main/cat_test.txt").write_text("000001 yes\n")
    with pytest.raises(ValueError, match=r"cat_test\.txt:1"):
        VOC2007Classification(voc2007, "test")
    with pytest.raises(ValueError, match="difficult"):
        VOC2007Classification(voc2007, "test", difficult="maybe")


def test_split_ternary_gives_labels_and_an_evaluation_mask() -> None:
    labels, valid = split_ternary(torch.tensor([1.0, 0.0, -1.0]))
    assert labels.tolist() == [1.0, 0.0, 0.0] and valid.tolist() == [True, False, True]


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    for name, colour in (("a.jpg", RED), ("b.jpg", BLUE), ("c.jpg", RED)):
        solid_jpeg(images / name, (24, 24), colour)
    data = {
        "categories": [{"id": 7, "name": "kite"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "images": [{"id": 5, "file_name": "b.jpg", "width": 24, "height": 24},
                   {"id": 2, "file_name": "a.jpg", "width": 24, "height": 24},
                   {"id": 9, "file_name": "c.jpg", "width": 24, "height": 24}],
        "annotations": [
            {"id": 1, "image_id": 2, "category_id": 7, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0},
            {"id": 4, "image_id": 5, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, images


def pycocotools_targets(annotation_file: Path) -> list[list[int]]:
    """The reference preparation: sorted category ids -> 0..C-1, images by id, empty ones skipped."""
    api = COCO(str(annotation_file))
    index = {cat: i for i, cat in enumerate(sorted(api.getCatIds()))}
    targets = []
    for image_id in sorted(api.getImgIds()):
        anns = api.loadAnns(api.getAnnIds(imgIds=image_id))
        if anns:
            target = [0] * len(index)
            for ann in anns:
                target[index[ann["category_id"]]] = 1
            targets.append(target)
    return targets


def test_coco_targets_match_the_pycocotools_reference(coco: tuple[Path, Path]) -> None:
    annotation_file, images = coco
    dataset = COCOClassification(annotation_file, images, image_size=16)
    assert dataset.class_names == ("person", "car", "kite")
    assert dataset.category_ids == (1, 3, 7)
    assert dataset.targets.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert dataset.targets.int().tolist() == pycocotools_targets(annotation_file)
    image, _ = dataset[1]
    assert image.shape == (3, 16, 16) and image[2].mean() > 0.97  # b.jpg is blue


def test_coco_keep_empty_and_unknown_category(coco: tuple[Path, Path], tmp_path: Path) -> None:
    annotation_file, images = coco
    assert COCOClassification(annotation_file, images, keep_empty=True).targets[2].tolist() == [0.0, 0.0, 0.0]
    data = json.loads(annotation_file.read_text())
    data["annotations"][0]["category_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="category_id 99"):
        COCOClassification(bad, images)


def test_json_list_resolves_relative_and_absolute_paths(tmp_path: Path) -> None:
    solid_jpeg(tmp_path / "data/JPEGImages/x.jpg", (30, 20), RED)
    solid_jpeg(tmp_path / "elsewhere/y.jpg", (30, 20), BLUE)
    records = [{"img_path": "JPEGImages/x.jpg", "target": [1, 0]},
               {"img_path": str(tmp_path / "elsewhere/y.jpg"), "target": [0, 1]}]
    (tmp_path / "data/list.json").write_text(json.dumps(records))
    dataset = JSONListClassification(tmp_path / "data/list.json", image_size=8, class_names=["a", "b"])
    assert [dataset[i][0][0].mean().item() > 0.97 for i in range(2)] == [True, False]
    assert dataset.targets.tolist() == [[1.0, 0.0], [0.0, 1.0]] and dataset.ternary is False
    assert dataset.items[0][0] == tmp_path / "data/JPEGImages/x.jpg"
    (tmp_path / "moved.json").write_text(json.dumps(records))
    rooted = JSONListClassification(tmp_path / "moved.json", root=tmp_path / "data")
    assert rooted.items[0][0] == tmp_path / "data/JPEGImages/x.jpg"
    assert rooted.class_names == ("class_0", "class_1")


def test_json_list_detects_ternary_voc_targets_and_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(json.dumps([{"img_path": "a.jpg", "target": [1, 0, -1]}]))
    assert JSONListClassification(tmp_path / "t.json").ternary is True
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        JSONListClassification(tmp_path / "bad.json")
    (tmp_path / "nokey.json").write_text(json.dumps([{"target": [1]}]))
    with pytest.raises(ValueError, match="record 0"):
        JSONListClassification(tmp_path / "nokey.json")
    with pytest.raises(ValueError, match="expected 4"):
        JSONListClassification(tmp_path / "t.json", class_names=["a", "b", "c", "d"])
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        JSONListClassification(tmp_path / "missing.json")


def test_missing_image_is_reported_by_path(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(json.dumps([{"img_path": "gone.jpg", "target": [1]}]))
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg"):
        JSONListClassification(tmp_path / "l.json")[0]


def test_train_transform_crops_to_size_in_unit_range() -> None:
    torch.manual_seed(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    out = train_transform(32)(image)
    assert out.shape == (3, 32, 32) and out.min() >= 0 and out.max() <= 1
