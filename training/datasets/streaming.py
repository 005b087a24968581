"""Fresh procedural scenes every epoch, drawn from a seed: a training set that cannot be memorised.

Scene ``i`` of epoch ``e`` is rendered from ``numpy.random.default_rng([seed, STREAM_CODE, e, i])``, so a
run is reproducible from its seed while no scene repeats across epochs. Each image takes the same JPEG
round trip (quality 90) as the files of the fixed test split, so training and test pixels match in kind.
A fixed validation set comes from its own code (``VAL_CODE``) and never overlaps the stream or the test split.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.kinds import TASKS, Task
from training.datasets.classification import eval_transform, train_transform
from training.datasets.scenes import EMBEDDED_CLASSES, Scene, SceneConfig, render_scene, rendering_processes
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


class ScenePool:
    """The first ``epochs`` epochs of a stream, rendered once and kept on disk as uint8 arrays.

    Scene ``(e, i)`` of the pool is exactly scene ``i`` of epoch ``e`` of the stream (same generator, same JPEG
    round trip), so a pooled run sees what a streamed run sees, without rendering on every pass. Runs that
    share the seed and the stream (epochs, arms, the CE and L_sb runs of a seed) share one folder:
    ``images.npy`` (N, H, W, 3), ``labels.npy`` (N, C) int8 and ``class_maps.npy``/``instance_maps.npy``
    (N, H, W) uint8 (``maps=False``, for classification: (N, 1, 1) placeholders), opened read-only as memory maps.
    """

    def __init__(self, root: str | Path, config: SceneConfig, seed: int, length: int, epochs: int,
                 code: int = STREAM_CODE, maps: bool = True, workers: int | None = None) -> None:
        key = json.dumps({"config": asdict(config), "seed": seed, "length": length, "code": code, "maps": maps},
                         sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.folder = Path(root) / f"pool-s{seed}-n{length}-e{epochs}-{digest}"
        self.config, self.seed, self.length, self.epochs, self.code = config, seed, length, epochs, code
        self.maps = maps  # False: classification only, no class/instance maps kept
        self.workers = workers or rendering_processes(length * epochs)
        if not (self.folder / "done").is_file():
            self._render()
        self._arrays: dict[str, np.ndarray] = {}

    def _render(self) -> None:
        """Render every scene of the pool into a temporary folder, on every core, then move it in place."""
        size, total = self.config.image_size, self.length * self.epochs
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        map_size = size if self.maps else 1
        arrays = {"images": (total, size, size, 3), "class_maps": (total, map_size, map_size),
                  "instance_maps": (total, map_size, map_size)}
        out = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
               for name, shape in arrays.items()}
        labels = np.zeros((total, len(EMBEDDED_CLASSES)), dtype=np.int8)
        # Scenes depend on their own generator only, so DataLoader workers render them in any process, in order.
        # The loader has its own generator: its workers' seeds must not come from (and advance) the global RNG that
        # initialises the model next, or a pooled run would start from other weights than a streamed one.
        workers = self.workers
        scenes = DataLoader(PoolScenes(self), batch_size=None, num_workers=0 if workers == 1 else workers,
                            collate_fn=as_arrays, generator=torch.Generator().manual_seed(0))
        desc = f"rendering scene pool ({total} scenes, {workers} process{'es' if workers > 1 else ''})"
        for k, (image, class_map, instance_map, label) in enumerate(tqdm(scenes, desc=desc, leave=False)):
            out["images"][k] = image
            if self.maps:
                out["class_maps"][k], out["instance_maps"][k] = class_map, instance_map
            labels[k] = label
        for array in out.values():
            array.flush()
        np.save(tmp / "labels.npy", labels)
        (tmp / "done").write_text(f"{total}\n")
        if self.folder.exists():  # another run finished the same pool first
            return
        tmp.rename(self.folder)

    def render(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Scene ``k`` of the pool (epoch-major) as it is stored: JPEG-round-tripped image, maps, ternary labels."""
        epoch, index = divmod(k, self.length)
        scene = render_scene(np.random.default_rng([self.seed, self.code, epoch, index]), self.config)
        return (np.asarray(jpeg_round_trip(scene.image)), scene.class_map, scene.instance_map,
                np.asarray(scene.labels(self.config), dtype=np.int8))

    def array(self, name: str) -> np.ndarray:
        """One of the pool's arrays, memory-mapped on first use (in each DataLoader worker)."""
        if name not in self._arrays:
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}  # workers open their own maps

    def item(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image, class map, instance map, labels) of scene ``index`` of ``epoch``; epochs past the pool wrap."""
        k = (epoch % self.epochs) * self.length + index
        return (np.asarray(self.array("images")[k]), np.asarray(self.array("class_maps")[k]),
                np.asarray(self.array("instance_maps")[k]), np.asarray(self.array("labels")[k]))


class PoolScenes(Dataset):
    """The scenes a pool renders, one per index, for DataLoader workers."""

    def __init__(self, pool: ScenePool) -> None:
        self.pool = pool

    def __len__(self) -> int:
        return self.pool.length * self.pool.epochs

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.pool.render(k)


def as_arrays(item: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Keep a rendered scene's numpy arrays as they are (no conversion to tensors)."""
    return item


class StreamingScenes(Dataset):
    """``length`` scenes per epoch; ``set_epoch`` moves to a new, disjoint draw.

    ``task=Task.CLASSIFICATION`` yields ``(image, target)`` with the ternary label rule of the config (the trainer
    trains a difficult 0 as absent, or leaves it out with ``--difficult ignore``); ``task=Task.SEGMENTATION`` yields
    ``(image, class_map, instance_map)``. ``train=False`` gives the evaluation form (stretch resize only).
    With a ``pool`` the scenes are read from its pre-rendered arrays instead of being rendered.
    """

    ternary = True  # classification targets: 1 / -1 / 0 difficult, as MultiLabelImages.ternary says

    def __init__(self, config: SceneConfig, seed: int, length: int, task: str, image_size: int,
                 train: bool = True, code: int = STREAM_CODE, pool: ScenePool | None = None) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be classification or segmentation, got {task!r}")
        if length < 1:
            raise ValueError(f"a stream needs at least one scene per epoch, got {length}")
        if pool is not None and (pool.seed, pool.length, pool.code) != (seed, length, code):
            raise ValueError("the scene pool was rendered for another stream")
        self.config, self.seed, self.length, self.task = config, seed, length, task
        self.image_size, self.train, self.code, self.pool = image_size, train, code, pool
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
        if isinstance(index, tuple):  # (epoch, index) from a step-indexed sampler
            self.epoch, index = index
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.pool is not None:
            image, class_map, instance_map, labels = self.pool.item(self.epoch, index)
            if self.task == Task.CLASSIFICATION:
                return self.transform(Image.fromarray(image)), torch.tensor(labels, dtype=torch.float32)
            return segmentation_item(Image.fromarray(image), class_map, instance_map, self.augment, self.image_size)
        scene = self.scene(index)
        image = jpeg_round_trip(scene.image)
        if self.task == Task.CLASSIFICATION:
            return self.transform(image), torch.tensor(scene.labels(self.config), dtype=torch.float32)
        return segmentation_item(image, scene.class_map, scene.instance_map, self.augment, self.image_size)


def validation_scenes(config: SceneConfig, seed: int, length: int, task: str, image_size: int) -> list:
    """A fixed validation set (rendered once, kept in memory) disjoint from the stream and the test files."""
    stream = StreamingScenes(config, seed, length, task, image_size, train=False, code=VAL_CODE)
    return [stream[i] for i in range(length)]
