"""Multi-label classification datasets: VOC2007 lists, COCO instances JSON, the reference JSON lists.

Every dataset yields ``(image, target)``: ``image`` a float CHW tensor in [0, 1], by default
stretched to ``image_size`` x ``image_size`` (the presets' protocol: no crop, aspect not kept), or
whatever ``transform`` makes of the PIL image; ``target`` a float tensor of C values.

Targets follow the reference code. Binary targets hold 1 (present) / 0 (absent). VOC2007 test
targets are ternary: 1 present, -1 absent, 0 "difficult only", which evaluation ignores; the
dataset's ``ternary`` attribute says which kind it yields, and ``split_ternary`` turns ternary
targets into labels plus a validity mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from common.datasets import is_ternary, read_coco_instances, read_json_list, read_voc_main
from common.labels import VOC_CLASSES, generic_class_names

ImageTransform = Callable[[Image.Image], torch.Tensor]
DIFFICULT_MODES = ("auto", "ignore", "negative", "positive")


def eval_transform(image_size: int) -> ImageTransform:
    """Stretch to ``image_size`` x ``image_size`` and scale to [0, 1] (no crop, no mean/std)."""
    return transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])


def train_transform(image_size: int, scale: tuple[float, float] = (0.7, 1.0)) -> ImageTransform:
    """Reference augmentation: horizontal flip, RandomResizedCrop(scale 0.7-1.0), to [0, 1]."""
    return transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomResizedCrop(image_size, scale=scale),
        transforms.ToTensor(),
    ])


def split_ternary(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary target (1 / -1 / 0 ignored) -> (binary labels, bool mask of entries to evaluate)."""
    return (target > 0).to(target.dtype), target != 0


def load_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB, naming the path when it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as image:
        return image.convert("RGB")


class MultiLabelImages(Dataset):
    """Images with multi-label targets, from an explicit list of ``(path, target)`` pairs."""

    def __init__(self, items: Sequence[tuple[Path, Sequence[float]]], class_names: Sequence[str],
                 image_size: int = 224, transform: ImageTransform | None = None, ternary: bool = False) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.items = [(Path(p), torch.tensor(t, dtype=torch.float32)) for p, t in items]
        self.class_names = tuple(class_names)
        for path, target in self.items:
            if target.shape != (len(self.class_names),):
                raise ValueError(f"target of {path} has {target.numel()} values, expected {len(self.class_names)}")
        self.transform = transform if transform is not None else eval_transform(image_size)
        self.ternary = ternary

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, target = self.items[index]
        return self.transform(load_rgb(path)), target.clone()

    @property
    def targets(self) -> torch.Tensor:
        """All targets as an (N, C) tensor, without reading images."""
        return torch.stack([t for _, t in self.items]) if self.items else torch.zeros(0, len(self.class_names))


class JSONListClassification(MultiLabelImages):
    """The reference JSON list ``[{"img_path", "target"}, ...]``, parsed by ``common.datasets.read_json_list``.

    A relative ``img_path`` is resolved against ``root`` (default: the JSON file's folder). Targets
    containing -1 are taken as ternary VOC2007 test targets unless ``ternary`` says otherwise.
    """

    def __init__(self, json_path: str | Path, image_size: int = 224, transform: ImageTransform | None = None,
                 class_names: Sequence[str] | None = None, root: str | Path | None = None,
                 ternary: bool | None = None) -> None:
        items = read_json_list(json_path, root)
        names = tuple(class_names) if class_names is not None else generic_class_names(len(items[0][1]))
        super().__init__(items, names, image_size, transform, is_ternary(items) if ternary is None else ternary)


class VOC2007Classification(MultiLabelImages):
    """VOC2007 (or VOC2012) from ``ImageSets/Main/<class>_<split>.txt`` (1 present, -1 absent, 0 difficult only).

    ``difficult`` says what a 0 becomes: "ignore" keeps the ternary labels (1 / -1 / 0 ignored),
    "negative" gives binary 0 (the reference code's choice for trainval), "positive" binary 1.
    "auto" (default) is "ignore" for the ``test`` split and "negative" otherwise, as the reference.
    ``class_names`` defaults to the 20 VOC classes; the embedded dataset passes EMBEDDED_CLASSES.
    ``root``: a VOCdevkit (its VOC2007, else VOC2012) or the year folder; parsed by ``read_voc_main``.
    """

    def __init__(self, root: str | Path, split: str = "trainval", image_size: int = 448,
                 transform: ImageTransform | None = None, difficult: str = "auto",
                 class_names: Sequence[str] = VOC_CLASSES) -> None:
        if difficult not in DIFFICULT_MODES:
            raise ValueError(f"difficult must be one of {', '.join(DIFFICULT_MODES)}, got {difficult!r}")
        if difficult == "auto":
            difficult = "ignore" if split == "test" else "negative"
        items = read_voc_main(root, split, class_names, difficult)
        super().__init__(items, class_names, image_size, transform, ternary=difficult == "ignore")


class COCOClassification(MultiLabelImages):
    """COCO instances JSON -> multi-label targets: category ids sorted and mapped to 0..C-1.

    As the reference preparation script, images without any annotation are left out (set
    ``keep_empty=True`` to keep them with an all-zero target); images are ordered by id.
    Parsed by ``common.datasets.read_coco_instances``.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, image_size: int = 448,
                 transform: ImageTransform | None = None, keep_empty: bool = False) -> None:
        coco = read_coco_instances(annotation_file, image_dir, keep_empty)
        self.category_ids = coco.category_ids
        super().__init__(coco.items, coco.class_names, image_size, transform)
