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

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from robustness.labels import VOC_CLASSES

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
    """The reference JSON list ``[{"img_path", "target"}, ...]``.

    A relative ``img_path`` is resolved against ``root`` (default: the JSON file's folder). Targets
    containing -1 are taken as ternary VOC2007 test targets unless ``ternary`` says otherwise.
    """

    def __init__(self, json_path: str | Path, image_size: int = 224, transform: ImageTransform | None = None,
                 class_names: Sequence[str] | None = None, root: str | Path | None = None,
                 ternary: bool | None = None) -> None:
        json_path = Path(json_path)
        if not json_path.is_file():
            raise FileNotFoundError(f"JSON list not found: {json_path}")
        try:
            records = json.loads(json_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{json_path}: not valid JSON ({error})") from None
        if not isinstance(records, list) or not records:
            raise ValueError(f"{json_path}: expected a non-empty JSON list of {{'img_path', 'target'}} records")
        base = Path(root) if root is not None else json_path.parent
        items = []
        for i, record in enumerate(records):
            if not isinstance(record, dict) or "img_path" not in record or "target" not in record:
                raise ValueError(f"{json_path}: record {i} lacks 'img_path' or 'target'")
            path = Path(record["img_path"])
            items.append((path if path.is_absolute() else base / path, record["target"]))
        num_classes = len(items[0][1])
        names = tuple(class_names) if class_names is not None else tuple(f"class_{c}" for c in range(num_classes))
        if ternary is None:
            ternary = any(v == -1 for _, target in items for v in target)
        super().__init__(items, names, image_size, transform, ternary)


def _voc_year_folder(root: Path) -> Path:
    """Accept either ``VOCdevkit`` (holding ``VOC2007``, else ``VOC2012``) or the year folder itself."""
    for year in ("VOC2007", "VOC2012"):
        if (root / year / "ImageSets").is_dir():
            return root / year
    if (root / "ImageSets").is_dir():
        return root
    raise FileNotFoundError(f"{root}: no ImageSets/ folder (expected a VOCdevkit, VOC2007 or VOC2012 folder)")


class VOC2007Classification(MultiLabelImages):
    """VOC2007 (or VOC2012) from ``ImageSets/Main/<class>_<split>.txt`` (1 present, -1 absent, 0 difficult only).

    ``difficult`` says what a 0 becomes: "ignore" keeps the ternary labels (1 / -1 / 0 ignored),
    "negative" gives binary 0 (the reference code's choice for trainval), "positive" binary 1.
    "auto" (default) is "ignore" for the ``test`` split and "negative" otherwise, as the reference.
    ``class_names`` defaults to the 20 VOC classes; the embedded dataset passes EMBEDDED_CLASSES.
    """

    def __init__(self, root: str | Path, split: str = "trainval", image_size: int = 448,
                 transform: ImageTransform | None = None, difficult: str = "auto",
                 class_names: Sequence[str] = VOC_CLASSES) -> None:
        if difficult not in DIFFICULT_MODES:
            raise ValueError(f"difficult must be one of {', '.join(DIFFICULT_MODES)}, got {difficult!r}")
        if difficult == "auto":
            difficult = "ignore" if split == "test" else "negative"
        folder = _voc_year_folder(Path(root))
        labels: dict[str, list[int]] = {}
        for c, name in enumerate(class_names):
            list_file = folder / "ImageSets" / "Main" / f"{name}_{split}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(f"class list not found: {list_file} (split {split!r}, class {name!r})")
            for line_number, line in enumerate(list_file.read_text().splitlines(), start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or fields[1] not in ("1", "0", "-1"):
                    raise ValueError(f"{list_file}:{line_number}: expected '<image id> <1|0|-1>', got {line!r}")
                labels.setdefault(fields[0], [-1] * len(class_names))[c] = int(fields[1])
        mapping = {"ignore": {1: 1, 0: 0, -1: -1}, "negative": {1: 1, 0: 0, -1: 0},
                   "positive": {1: 1, 0: 1, -1: 0}}[difficult]
        items = [(folder / "JPEGImages" / f"{image_id}.jpg", [mapping[v] for v in values])
                 for image_id, values in labels.items()]
        super().__init__(items, class_names, image_size, transform, ternary=difficult == "ignore")


class COCOClassification(MultiLabelImages):
    """COCO instances JSON -> multi-label targets: category ids sorted and mapped to 0..C-1.

    As the reference preparation script, images without any annotation are left out (set
    ``keep_empty=True`` to keep them with an all-zero target); images are ordered by id.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, image_size: int = 448,
                 transform: ImageTransform | None = None, keep_empty: bool = False) -> None:
        annotation_file = Path(annotation_file)
        if not annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
        try:
            data = json.loads(annotation_file.read_text())
            categories = sorted(data["categories"], key=lambda c: c["id"])
            images = sorted(data["images"], key=lambda i: i["id"])
            annotations = data.get("annotations", [])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{annotation_file}: not a COCO instances file ({error!r})") from None
        index_of = {c["id"]: i for i, c in enumerate(categories)}
        present: dict[int, set[int]] = {}
        for annotation in annotations:
            if annotation["category_id"] not in index_of:
                raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} has unknown "
                                 f"category_id {annotation['category_id']}")
            present.setdefault(annotation["image_id"], set()).add(index_of[annotation["category_id"]])
        self.category_ids = tuple(c["id"] for c in categories)
        items = []
        for image in images:
            classes = present.get(image["id"], set())
            if classes or keep_empty:
                target = [1 if c in classes else 0 for c in range(len(categories))]
                items.append((Path(image_dir) / image["file_name"], target))
        super().__init__(items, tuple(c["name"] for c in categories), image_size, transform)
