"""Fresh procedural scenes every epoch, drawn from a seed: a training set that cannot be memorised.

Scene ``i`` of epoch ``e`` is rendered from ``numpy.random.default_rng([seed, STREAM_CODE, e, i])``, so a
run is reproducible from its seed while no scene repeats across epochs. Each image takes the same JPEG
round trip (quality 90) as the files of the fixed test split, so training and test pixels match in kind.
A fixed validation set comes from its own code (``VAL_CODE``) and never overlaps the stream or the test split.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from training.datasets.classification import eval_transform, train_transform
from training.datasets.scenes import Scene, SceneConfig, render_scene
from training.datasets.segmentation import JointAugment, segmentation_item
from training.datasets.synthetic import JPEG_QUALITY, SPLIT_CODES

STREAM_CODE = 2
VAL_CODE = 3
assert STREAM_CODE not in SPLIT_CODES.values() and VAL_CODE not in SPLIT_CODES.values()


def jpeg_round_trip(image: np.ndarray) -> Image.Image:
    """The scene's pixels as the dataset files hold them: JPEG at the dataset's quality, decoded to RGB."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


class StreamingScenes(Dataset):
    """``length`` scenes per epoch; ``set_epoch`` moves to a new, disjoint draw.

    ``task="classification"`` yields ``(image, target)`` with the ternary label rule of the config (training
    treats difficult as negative, as the trainer clamps); ``task="segmentation"`` yields
    ``(image, class_map, instance_map)``. ``train=False`` gives the evaluation form (stretch resize only).
    """

    def __init__(self, config: SceneConfig, seed: int, length: int, task: str, image_size: int,
                 train: bool = True, code: int = STREAM_CODE) -> None:
        if task not in ("classification", "segmentation"):
            raise ValueError(f"task must be classification or segmentation, got {task!r}")
        if length < 1:
            raise ValueError(f"a stream needs at least one scene per epoch, got {length}")
        self.config, self.seed, self.length, self.task = config, seed, length, task
        self.image_size, self.train, self.code = image_size, train, code
        self.epoch = 0
        self.transform = train_transform(image_size) if train else eval_transform(image_size)
        self.augment = JointAugment(image_size) if train else None

    def set_epoch(self, epoch: int) -> None:
        """Draw the scenes of another epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        """Scene ``index`` of the current epoch."""
        return render_scene(np.random.default_rng([self.seed, self.code, self.epoch, index]), self.config)

    def __getitem__(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(index)
        scene = self.scene(index)
        image = jpeg_round_trip(scene.image)
        if self.task == "classification":
            return self.transform(image), torch.tensor(scene.labels(self.config), dtype=torch.float32)
        return segmentation_item(image, scene.class_map, scene.instance_map, self.augment, self.image_size)


def validation_scenes(config: SceneConfig, seed: int, length: int, task: str, image_size: int) -> list:
    """A fixed validation set (rendered once, kept in memory) disjoint from the stream and the test files."""
    stream = StreamingScenes(config, seed, length, task, image_size, train=False, code=VAL_CODE)
    return [stream[i] for i in range(length)]
