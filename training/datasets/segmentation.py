"""VOC-style segmentation with instance maps (VOC, PASCAL-B, the embedded dataset).

Folder: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (0 background, 1..C, 255 void),
``SegmentationObject/<id>.png`` (0 background, 1..K instances, 255 void) and
``ImageSets/Segmentation/<split>.txt``. Items are ``(image, class_map, instance_map)``: the image
a float CHW tensor in [0, 1], the maps (H, W) int64 tensors.

- ``train=True``: joint augmentation, the same for image and maps: horizontal flip, then a random
  resized crop to ``image_size`` x ``image_size`` (bilinear for the image, nearest for the maps).
- ``train=False``: the image is stretched to ``image_size`` x ``image_size`` (the presets'
  protocol; ``image_size=None`` keeps it as is) and the maps stay at the original resolution, as
  evaluation (mIoU, IA-mIoU size buckets) needs. Use ``keep_maps_collate`` to batch such items
  when image sizes differ.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from common.datasets import segmentation_ids, segmentation_paths
from common.label_png import read_label_png
from common.labels import VOID
from training.datasets.classification import load_rgb


def random_resized_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                       rng: random.Random) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering ``scale`` of the area with aspect in ``ratio`` (as torchvision)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return 0, 0, height, width


class JointAugment:
    """Flip and random-resized-crop an image and its label maps together (labels with nearest)."""

    def __init__(self, image_size: int, scale: tuple[float, float] = (0.5, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True, seed: int | None = None) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.image_size, self.scale, self.ratio, self.flip = image_size, scale, ratio, flip
        self.rng = random.Random(seed) if seed is not None else random  # module random: seeded per worker

    def __call__(self, image: Image.Image, maps: Sequence[np.ndarray]) -> tuple[Image.Image, list[np.ndarray]]:
        """Return the augmented image (size S x S) and maps (S x S), sharing one flip and one crop."""
        labels = [Image.fromarray(m) for m in maps]
        if self.flip and self.rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            labels = [m.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for m in labels]
        top, left, h, w = random_resized_box(image.height, image.width, self.scale, self.ratio, self.rng)
        box, size = (left, top, left + w, top + h), (self.image_size, self.image_size)
        image = image.resize(size, Image.Resampling.BILINEAR, box=box)
        return image, [np.array(m.resize(size, Image.Resampling.NEAREST, box=box)) for m in labels]


class VOCSegmentation(Dataset):
    """VOC-style segmentation folder -> (image, class map, instance map); see the module docstring."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = 224, train: bool = False,
                 scale: tuple[float, float] = (0.5, 1.0), flip: bool = True,
                 class_names: Sequence[str] | None = None, instances: bool = True) -> None:
        self.root = Path(root)
        self.ids = segmentation_ids(self.root, split)
        if train and image_size is None:
            raise ValueError("train=True needs an image_size for the random resized crop")
        self.image_size, self.train, self.instances = image_size, train, instances
        self.augment = JointAugment(image_size, scale=scale, flip=flip) if train else None
        self.class_names = tuple(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    def paths(self, index: int) -> tuple[Path, Path, Path]:
        """Image, class-map and instance-map paths of item ``index``."""
        return segmentation_paths(self.root, self.ids[index])

    def read_maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Class and instance maps of item ``index`` at original resolution (uint8)."""
        _, class_path, instance_path = self.paths(index)
        for path in (class_path, instance_path) if self.instances else (class_path,):
            if not path.is_file():
                raise FileNotFoundError(f"label map not found: {path}")
        class_map = read_label_png(class_path)
        if self.instances:
            instance_map = read_label_png(instance_path)
            if instance_map.shape != class_map.shape:
                raise ValueError(f"{instance_path}: shape {instance_map.shape} differs from class map "
                                 f"{class_map.shape}")
        else:  # no instance annotation: only void is known
            instance_map = np.where(class_map == VOID, VOID, 0).astype(np.uint8)
        return class_map, instance_map

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_path = self.paths(index)[0]
        image = load_rgb(image_path)
        class_map, instance_map = self.read_maps(index)
        if class_map.shape != (image.height, image.width):
            raise ValueError(f"{image_path}: image {image.height}x{image.width} but label map {class_map.shape}")
        return segmentation_item(image, class_map, instance_map, self.augment, self.image_size)


def segmentation_item(image: Image.Image, class_map: np.ndarray, instance_map: np.ndarray,
                      augment: JointAugment | None, image_size: int | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, class map, instance map) tensors: jointly augmented for training, else the image resized to
    ``image_size`` (if given) and the maps kept at their original resolution."""
    if augment is not None:
        image, (class_map, instance_map) = augment(image, [class_map, instance_map])
    elif image_size is not None:
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return (TF.to_tensor(image), torch.from_numpy(class_map.astype(np.int64)),
            torch.from_numpy(instance_map.astype(np.int64)))


def keep_maps_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                      ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Stack the (equal-size) images; keep the original-resolution maps as lists."""
    images, class_maps, instance_maps = zip(*batch, strict=True)
    return torch.stack(images), list(class_maps), list(instance_maps)
