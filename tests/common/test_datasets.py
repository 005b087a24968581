"""common.datasets: the test split of every layout training reads, torch-free, listed as training lists it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.datasets import VOC_SEGMENTATION_CLASSES, AnnotationTooLarge, EvalSet, evaluation_set
from common.label_png import read_label_png
from common.labels import EMBEDDED_CLASSES, VOC_CLASSES
from models.segmenters import VOC_SEGMENTATION_CLASSES as MODEL_SEGMENTATION_CLASSES
from robustness.metrics import multilabel_metrics
from tests.training.test_data_sources import jpeg, write_coco_layout, write_voc
from training.data import classification_datasets, segmentation_datasets
from training.datasets import make_dataset
from training.datasets.palette import save_label_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("emb") / "data", 4, 3, image_size=32, seed=2, progress=False)


@pytest.fixture
def voc2007(tmp_path: Path) -> Path:
    """Classification trainval 000001-000008, test 000009-000012; segmentation val = 000009-000011 only."""
    trainval = [f"{i:06d}" for i in range(1, 9)]
    test = [f"{i:06d}" for i in range(9, 13)]
    write_voc(tmp_path, "VOC2007", {"trainval": trainval, "test": test}, {"train": trainval[:6], "val": test[:3]})
    return tmp_path


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    train = [(i, f"COCO_train2014_{i:012d}.jpg", [1, 18] if i % 2 else [3]) for i in range(1, 5)]
    val = [(52, "COCO_val2014_000000000052.jpg", [18, 1]), (50, "COCO_val2014_000000000050.jpg", [3]),
           (51, "COCO_val2014_000000000051.jpg", [])]
    return write_coco_layout(tmp_path, train, val)


def images_and_labels(evalset: EvalSet) -> list[tuple[Path, list[int]]]:
    return [(item.image, list(item.labels)) for item in evalset.items]


def training_test_items(data: Path, **kwargs) -> list[tuple[Path, list[int]]]:
    test = classification_datasets(data, 16, val_fraction=0.25, **kwargs).test
    return [(path, target.int().tolist()) for path, target in test.items]


# ------------------------------------------------------------------------------------------- embedded dataset

def test_embedded_classification_is_the_test_json_with_its_label_maps(embedded: Path) -> None:
    evalset = evaluation_set(embedded, "classification")
    records = json.loads((embedded / "test.json").read_text())
    assert len(evalset) == 3 and evalset.task == "classification" and evalset.source == "json"
    assert evalset.class_names == EMBEDDED_CLASSES and evalset.root == embedded
    assert [item.name for item in evalset.items] == ["test_000000", "test_000001", "test_000002"]
    assert images_and_labels(evalset) == [(embedded / r["img_path"], r["target"]) for r in records]
    assert evalset.ternary == any(v == -1 for r in records for v in r["target"])
    assert images_and_labels(evalset) == training_test_items(embedded)  # one parser
    item = evalset.items[1]
    assert item.class_map == embedded / "SegmentationClass/test_000001.png"
    assert item.instance_map == embedded / "SegmentationObject/test_000001.png"
    sample = evalset.read(1)
    assert sample.name == "test_000001" and sample.image.shape == (32, 32, 3) and sample.image.dtype == np.uint8
    assert sample.labels.dtype == np.int8 and sample.labels.tolist() == records[1]["target"]
    assert np.array_equal(sample.class_map, read_label_png(item.class_map))
    assert np.array_equal(sample.instance_map, read_label_png(item.instance_map))
    assert sample.class_map.dtype == np.uint8 and sample.class_map.shape == (32, 32)


def test_embedded_segmentation_lists_the_test_ids_with_background_first(embedded: Path) -> None:
    evalset = evaluation_set(embedded, "segmentation")
    training = segmentation_datasets(embedded, 16, val_fraction=0.25).test
    assert evalset.task == "segmentation" and evalset.source == "embedded" and evalset.ternary is False
    assert evalset.class_names == ("background", *EMBEDDED_CLASSES)
    assert [item.name for item in evalset.items] == training.ids == ["test_000000", "test_000001", "test_000002"]
    assert [item.image for item in evalset.items] == [training.paths(i)[0] for i in range(3)]
    for index in range(3):
        sample = evalset.read(index)
        class_map, instance_map = training.read_maps(index)
        assert sample.labels is None and sample.image.shape == (32, 32, 3)
        assert np.array_equal(sample.class_map, class_map) and np.array_equal(sample.instance_map, instance_map)


def test_limit_keeps_the_first_items(embedded: Path) -> None:
    full = evaluation_set(embedded, "classification")
    assert evaluation_set(embedded, "classification", limit=2).items == full.items[:2]
    assert evaluation_set(embedded, "classification", limit=50).items == full.items
    assert [i.name for i in evaluation_set(embedded, "segmentation", limit=1).items] == ["test_000000"]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        evaluation_set(embedded, "classification", limit=0)


# ------------------------------------------------------------------------------------------------------- VOC

def test_voc2007_test_targets_stay_ternary_and_maps_come_where_present(voc2007: Path) -> None:
    for path in (voc2007, voc2007 / "VOCdevkit", voc2007 / "VOCdevkit/VOC2007"):
        evalset = evaluation_set(path, "classification")
        assert evalset.source == "voc2007" and evalset.class_names == VOC_CLASSES and evalset.ternary is True
        assert [item.name for item in evalset.items] == ["000009", "000010", "000011", "000012"]
        assert images_and_labels(evalset) == training_test_items(path)  # one parser
    folder = voc2007 / "VOCdevkit/VOC2007"
    # write_voc: image n of a list has class n % 20 present; class 1 of the first image is difficult only.
    assert evalset.read(0).labels.tolist() == [1, 0] + [-1] * 18
    assert evalset.read(1).labels.tolist() == [-1, 1] + [-1] * 18
    assert evalset.items[0].class_map == folder / "SegmentationClass/000009.png"
    assert evalset.items[3].class_map is None and evalset.items[3].instance_map is None  # not in a seg split
    sample = evalset.read(2)
    assert sample.class_map.shape == (32, 32) and set(np.unique(sample.class_map).tolist()) == {0, 3, 255}
    assert set(np.unique(sample.instance_map).tolist()) == {0, 1, 255}
    targets = evalset.targets
    assert targets.shape == (4, 20) and targets.dtype == np.int8 and targets[0, 1] == 0
    scores = (targets == 1).astype(float)
    assert multilabel_metrics(scores, targets, ignore_zero=evalset.ternary)["mAP"] == 100.0


def test_voc2012_classification_tests_on_val(tmp_path: Path) -> None:
    write_voc(tmp_path, "VOC2012", {"train": ["a1", "a2", "a3", "a4"], "val": ["b1", "b2"]}, {})
    evalset = evaluation_set(tmp_path / "VOCdevkit", "classification")
    assert evalset.source == "voc2012" and evalset.ternary is True
    assert [item.name for item in evalset.items] == ["b1", "b2"]
    assert images_and_labels(evalset) == training_test_items(tmp_path / "VOCdevkit")


def test_voc_segmentation_tests_on_val_with_voc_classes(voc2007: Path) -> None:
    evalset = evaluation_set(voc2007 / "VOCdevkit", "segmentation")
    assert evalset.source == "voc2007" and len(evalset) == 3
    assert evalset.class_names == VOC_SEGMENTATION_CLASSES == MODEL_SEGMENTATION_CLASSES
    assert [item.name for item in evalset.items] == segmentation_datasets(voc2007, 16).test.ids
    folder = voc2007 / "VOCdevkit/VOC2007"
    for n, item in enumerate(evalset.items):
        sample = evalset.read(n)
        expected = np.zeros((32, 32), dtype=np.uint8)
        expected[4:20, 4:20] = 1 + n
        expected[20, :] = 255
        assert np.array_equal(sample.class_map, expected)
        assert np.array_equal(sample.instance_map, np.where(expected == 255, 255, expected > 0))
        assert item.instance_map == folder / "SegmentationObject" / f"{item.name}.png"


def test_voc_style_folder_without_instances_or_card(tmp_path: Path) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / sub).mkdir(parents=True)
    jpeg(tmp_path / "JPEGImages/x.jpg", 0)
    save_label_png(np.ones((32, 32), dtype=np.uint8), tmp_path / "SegmentationClass/x.png")
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("x\n")
    evalset = evaluation_set(tmp_path, "segmentation")
    assert evalset.source == "voc-style" and evalset.class_names == VOC_SEGMENTATION_CLASSES
    assert evalset.items[0].instance_map is None and evalset.read(0).instance_map is None
    assert evalset.read(0).class_map.tolist() == np.ones((32, 32)).tolist()


# ---------------------------------------------------------------------------------------- COCO and JSON lists

def test_coco_reads_only_the_val_twin_with_sorted_category_ids(coco: Path) -> None:
    annotations = coco / "annotations/instances_train2014.json"
    expected = training_test_items(annotations)
    (coco / "train2014").rename(coco / "train_images_gone")  # the evaluator never needs the training images
    evalset = evaluation_set(annotations, "classification")
    assert evalset.source == "coco" and evalset.ternary is False
    assert evalset.class_names == ("person", "car", "dog")  # category ids 1, 3, 18 -> 0, 1, 2
    assert images_and_labels(evalset) == expected == [
        (coco / "val2014/COCO_val2014_000000000050.jpg", [0, 1, 0]),
        (coco / "val2014/COCO_val2014_000000000052.jpg", [1, 0, 1]),  # image 51 has no annotation: left out
    ]
    assert evalset.items[0].class_map is None and evalset.read(0).image.shape == (32, 32, 3)
    moved = coco.parent / "elsewhere"
    moved.mkdir()
    (coco / "val2014").rename(moved / "val2014")
    with pytest.raises(FileNotFoundError, match=r"val2014.*pass image_dir"):
        evaluation_set(annotations, "classification")
    assert evaluation_set(annotations, "classification", image_dir=moved).items[0].image.parent == moved / "val2014"


def test_reference_json_list_file_uses_its_test_twin_and_voc_names(tmp_path: Path) -> None:
    for n in range(4):
        jpeg(tmp_path / "img" / f"{n}.jpg", 50 * n)
    (tmp_path / "trainval_voc07.json").write_text(json.dumps(
        [{"img_path": f"img/{n}.jpg", "target": [1] + [0] * 19} for n in range(3)]))
    (tmp_path / "test_voc07.json").write_text(json.dumps([{"img_path": "img/3.jpg", "target": [-1] * 19 + [1]}]))
    evalset = evaluation_set(tmp_path / "trainval_voc07.json", "classification")
    assert evalset.source == "json" and evalset.class_names == VOC_CLASSES and evalset.ternary is True
    assert images_and_labels(evalset) == [(tmp_path / "img/3.jpg", [-1] * 19 + [1])]
    assert images_and_labels(evalset) == training_test_items(tmp_path / "trainval_voc07.json")
    (tmp_path / "test_voc07.json").write_text(json.dumps([{"img_path": "img/3.jpg", "target": [2] * 20}]))
    with pytest.raises(ValueError, match=r"test_voc07\.json: record 0: target value 2 is not 1, 0 or -1"):
        evaluation_set(tmp_path / "trainval_voc07.json", "classification")


# ------------------------------------------------------------------------------------------------------ errors

def test_missing_folder_and_unknown_layout_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset not found: .*nowhere.*make-dataset"):
        evaluation_set(tmp_path / "nowhere", "classification")
    with pytest.raises(FileNotFoundError, match=r"dataset not found: .*nowhere.*ImageSets/Segmentation"):
        evaluation_set(tmp_path / "nowhere", "segmentation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a dataset layout this loader knows; accepted: .*VOCdevkit"):
        evaluation_set(tmp_path / "empty", "classification")
    with pytest.raises(ValueError, match=r"empty: not a dataset layout.*SegmentationObject"):
        evaluation_set(tmp_path / "empty", "segmentation")
    with pytest.raises(ValueError, match=r"task must be one of classification, segmentation, got 'detection'"):
        evaluation_set(tmp_path / "empty", "detection")


def test_read_names_a_missing_image_or_a_map_of_the_wrong_size(embedded: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(embedded, tmp_path / "copy"))
    evalset = evaluation_set(copy, "segmentation")
    with pytest.raises(ValueError, match="image_dir applies to COCO"):
        evaluation_set(copy, "segmentation", image_dir=copy)
    (copy / "JPEGImages/test_000000.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*test_000000\.jpg"):
        evalset.read(0)
    save_label_png(np.zeros((8, 8), dtype=np.uint8), copy / "SegmentationObject/test_000001.png")
    with pytest.raises(ValueError, match=r"test_000001\.png: label map 8x8 but image .* is 32x32"):
        evalset.read(1)
    (copy / "SegmentationClass/test_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"label map not found: .*SegmentationClass/test_000002\.png"):
        evalset.read(2)


def test_the_library_imports_without_torch() -> None:
    code = "import sys, common.datasets, common.label_png; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_an_annotation_file_over_the_limit_is_refused_before_it_is_read(embedded: Path, tmp_path: Path) -> None:
    data = shutil.copytree(embedded, tmp_path / "data")
    records = json.loads((data / "test.json").read_text())
    (data / "test.json").write_text(json.dumps(records * 100))
    size, card = (data / "test.json").stat().st_size, (data / "dataset.json").stat().st_size
    assert size > card
    with pytest.raises(AnnotationTooLarge, match=f"test.json is {size:,} bytes; the limit for an annotation file is "
                                                 f"{size - 1:,} bytes") as refused:
        evaluation_set(data, "classification", max_annotation_bytes=size - 1)
    assert (refused.value.size, refused.value.limit) == (size, size - 1)
    with pytest.raises(AnnotationTooLarge, match=r"dataset\.json is"):
        evaluation_set(data, "segmentation", max_annotation_bytes=card - 1)
    assert len(evaluation_set(data, "classification", max_annotation_bytes=size)) == 300


def test_a_checkpoint_that_raises_stops_the_load(embedded: Path) -> None:
    calls = []

    def checkpoint() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        evaluation_set(embedded, "segmentation", checkpoint=checkpoint)
    assert len(calls) == 3
