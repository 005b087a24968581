"""VOC-style segmentation loader: maps at original resolution for evaluation, joint augmentation for training."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from training.datasets import JointAugment, VOCSegmentation, keep_maps_collate, make_dataset, read_label_png
from training.datasets.palette import save_label_png
from training.datasets.segmentation import random_resized_box


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("seg") / "data", 3, 2, image_size=64, seed=1, progress=False)


def write_item(root: Path, stem: str, image: np.ndarray, classes: np.ndarray, instances: np.ndarray) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "JPEGImages" / f"{stem}.jpg", quality=100, subsampling=0)
    save_label_png(classes, root / "SegmentationClass" / f"{stem}.png")
    save_label_png(instances, root / "SegmentationObject" / f"{stem}.png")
    with (root / "ImageSets/Segmentation/train.txt").open("a") as f:
        f.write(f"{stem}\n")


@pytest.fixture
def halves(tmp_path: Path) -> Path:
    """40x60 image: left half red = class 1 / instance 1, right half blue = class 2 / instance 2."""
    classes = np.ones((40, 60), dtype=np.uint8)
    classes[:, 30:] = 2
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :30, 0] = 255
    image[:, 30:, 2] = 255
    write_item(tmp_path, "halves", image, classes, classes.copy())
    return tmp_path


def test_evaluation_items_keep_maps_at_original_resolution(embedded: Path) -> None:
    dataset = VOCSegmentation(embedded, "test", image_size=48)
    image, classes, instances = dataset[1]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert classes.dtype == torch.int64 and classes.shape == (64, 64)
    assert np.array_equal(classes.numpy(), read_label_png(embedded / "SegmentationClass/test_000001.png"))
    assert np.array_equal(instances.numpy(), read_label_png(embedded / "SegmentationObject/test_000001.png"))
    assert VOCSegmentation(embedded, "test", image_size=None)[0][0].shape == (3, 64, 64)


def test_training_items_are_cropped_jointly_and_keep_label_consistency(embedded: Path) -> None:
    random.seed(0)
    dataset = VOCSegmentation(embedded, "train", image_size=40, train=True)
    for index in range(len(dataset)):
        image, classes, instances = dataset[index]
        assert image.shape == (3, 40, 40) and classes.shape == instances.shape == (40, 40)
        original = read_label_png(embedded / "SegmentationClass" / f"train_{index:06d}.png")
        assert set(classes.unique().tolist()) <= set(np.unique(original).tolist())  # nearest: no new labels
        assert torch.equal(classes == 255, instances == 255)
        for k in set(instances.unique().tolist()) - {0, 255}:
            assert len(classes[instances == k].unique()) == 1


def test_joint_crop_keeps_image_and_labels_aligned(halves: Path) -> None:
    dataset = VOCSegmentation(halves, "train", image_size=24, train=True, scale=(0.2, 1.0))
    for seed in range(12):
        random.seed(seed)
        image, classes, _ = dataset[0]
        inner = torch.nn.functional.max_pool2d(classes[None, None].float(), 5, 1, 2)[0, 0]
        inner_min = -torch.nn.functional.max_pool2d(-classes[None, None].float(), 5, 1, 2)[0, 0]
        interior = inner == inner_min  # pixels whose 5x5 neighbourhood has one label
        red_side = interior & (classes == 1)
        blue_side = interior & (classes == 2)
        assert (image[0][red_side] > 0.75).all() and (image[2][red_side] < 0.25).all()
        assert (image[2][blue_side] > 0.75).all() and (image[0][blue_side] < 0.25).all()


def test_flip_mirrors_image_and_maps_together() -> None:
    image = Image.fromarray(np.tile(np.arange(8, dtype=np.uint8)[None, :, None] * 30, (4, 1, 3)))
    labels = np.tile(np.arange(8, dtype=np.uint8), (4, 1))
    outcomes = set()
    for seed in range(6):
        augment = JointAugment(8, scale=(1.0, 1.0), ratio=(2.0, 2.0), seed=seed)  # full 4x8 box, stretched
        out_image, (out_labels,) = augment(image, [labels])
        flipped = out_labels[0, 0] == 7
        outcomes.add(bool(flipped))
        expected = np.repeat(labels[:, ::-1] if flipped else labels, 2, axis=0)
        assert np.array_equal(out_labels, expected)
        assert np.array_equal(np.array(out_image)[0, :, 0] // 30, expected[0])
    assert outcomes == {True, False}


def test_random_resized_box_stays_inside_and_respects_scale() -> None:
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = random_resized_box(50, 80, (0.3, 0.6), (3 / 4, 4 / 3), rng)
        assert top >= 0 and top + h <= 50 and left >= 0 and left + w <= 80
        assert 0.27 * 4000 <= h * w <= 0.63 * 4000


def test_collate_keeps_maps_of_different_sizes(halves: Path, embedded: Path) -> None:
    first = VOCSegmentation(halves, "train", image_size=32)[0]
    second = VOCSegmentation(embedded, "test", image_size=32)[0]
    images, classes, instances = keep_maps_collate([first, second])
    assert images.shape == (2, 3, 32, 32)
    assert [c.shape for c in classes] == [(40, 60), (64, 64)] and len(instances) == 2


def test_default_collate_batches_training_items(embedded: Path) -> None:
    loader = DataLoader(VOCSegmentation(embedded, "train", image_size=32, train=True), batch_size=3)
    images, classes, instances = next(iter(loader))
    assert images.shape == (3, 3, 32, 32) and classes.shape == instances.shape == (3, 32, 32)


def test_without_instances_only_void_is_kept(halves: Path) -> None:
    classes = read_label_png(halves / "SegmentationClass/halves.png")
    classes[0, 0] = 255
    save_label_png(classes, halves / "SegmentationClass/halves.png")
    _, _, instances = VOCSegmentation(halves, "train", image_size=16, instances=False)[0]
    assert instances[0, 0] == 255 and (instances.flatten()[1:] == 0).all()


def test_bad_inputs_raise_clear_errors(halves: Path) -> None:
    with pytest.raises(FileNotFoundError, match="val"):
        VOCSegmentation(halves, "val")
    with pytest.raises(ValueError, match="image_size"):
        VOCSegmentation(halves, "train", image_size=None, train=True)
    save_label_png(np.zeros((10, 10), dtype=np.uint8), halves / "SegmentationObject/halves.png")
    with pytest.raises(ValueError, match="differs from class map"):
        VOCSegmentation(halves, "train")[0]
