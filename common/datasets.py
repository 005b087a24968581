"""Dataset layouts and annotation parsers without torch, and the TEST split of any of them for offline evaluation.

The training loaders (``training.data``) read through this module, so whatever they train on, the evaluator and the
server can read too, with one parser per layout. Classification (``classification_layout``):

- a folder with ``train.json`` + ``test.json`` (the embedded dataset, or the reference JSON lists; class names from
  ``dataset.json`` "classes" when present), or one reference JSON list file (``trainval_voc07.json``: its test
  twin is found beside it; VOC / COCO / WIDER names recognised from the file name and class count);
- ``VOCdevkit``, ``VOCdevkit/VOC2007`` or ``VOCdevkit/VOC2012``: train = trainval, test = test for VOC2007 (ternary,
  difficult ignored), train = train, test = val for VOC2012, from ``ImageSets/Main/<class>_<split>.txt``;
- a COCO instances file (``annotations/instances_train2014.json``): images from ``train2014/`` beside
  ``annotations/`` (or ``image_dir``), test = ``instances_val2014.json`` and ``val2014/``.

Segmentation (``segmentation_layout``): ``VOCdevkit`` / ``VOC2012`` / ``VOC2007`` (``ImageSets/Segmentation`` train /
val, background + the 20 VOC classes), or any other VOC-style folder (the embedded one, PASCAL-B) with
``ImageSets/Segmentation`` train and test (or val), class names from ``dataset.json`` "segmentation_classes" or VOC's.

``evaluation_set(data, task)`` gives the test split as an ``EvalSet`` of ``EvalItem`` paths; ``EvalSet.read(i)``
decodes one item into numpy arrays (``EvalSample``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.kinds import TASKS, Task
from common.label_png import read_label_png
from common.labels import COCO_CLASSES, VOC_CLASSES, WIDER_ATTRIBUTES, generic_class_names

VOC_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)
VOC_YEARS = ("VOC2007", "VOC2012")
CLASSIFICATION_LAYOUTS = ("a folder with train.json + test.json (embedded dataset, reference JSON lists), "
                          "a reference JSON list file, a VOCdevkit / VOC2007 / VOC2012 folder, "
                          "or a COCO instances JSON such as annotations/instances_train2014.json")
SEGMENTATION_LAYOUTS = ("a VOCdevkit / VOC2007 / VOC2012 folder, or a VOC-style folder with "
                        "ImageSets/Segmentation/{train,test or val}.txt, JPEGImages, SegmentationClass "
                        "and SegmentationObject (the embedded dataset, PASCAL-B)")
# What a VOC ImageSets/Main value (1 present, 0 difficult only, -1 absent) becomes under each ``difficult`` mode.
DIFFICULT_VALUES = {"ignore": {1: 1, 0: 0, -1: -1}, "negative": {1: 1, 0: 0, -1: 0},
                    "positive": {1: 1, 0: 1, -1: 0}}

LabelledImage = tuple[Path, tuple[int, ...]]  # an image file and its classification target
Checkpoint = Callable[[], None]  # called between records while a set loads; it raises to stop the load
CHECK_EVERY = 1024  # records parsed between two checkpoints


class AnnotationTooLarge(ValueError):
    """An annotation file larger than the limit; raised from its size, before a byte of it is read."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        super().__init__(f"{path} is {size:,} bytes; the limit for an annotation file is {limit:,} bytes")
        self.path, self.size, self.limit = path, size, limit


def check_size(path: Path, limit: int | None) -> Path:
    """``path`` when it is not a file larger than ``limit`` bytes (no limit: None); else AnnotationTooLarge."""
    if limit is not None and path.is_file() and (size := path.stat().st_size) > limit:
        raise AnnotationTooLarge(path, size, limit)
    return path


# ------------------------------------------------------------------------------------ classification parsers

def _target(values: object, where: str) -> tuple[int, ...]:
    """A JSON target as ints, accepting only 1 / 0 / -1 (1.0 and friends included)."""
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: 'target' must be a non-empty list of 1 / 0 / -1, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or value not in (-1, 0, 1):
            raise ValueError(f"{where}: target value {value!r} is not 1, 0 or -1")
    return tuple(int(v) for v in values)


def read_json_list(json_path: str | Path, root: str | Path | None = None,
                   checkpoint: Checkpoint | None = None) -> list[LabelledImage]:
    """Parse a reference JSON list ``[{"img_path", "target"}, ...]``; relative paths resolve against ``root``."""
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
        if checkpoint is not None and i % CHECK_EVERY == 0:
            checkpoint()
        if not isinstance(record, dict) or "img_path" not in record or "target" not in record:
            raise ValueError(f"{json_path}: record {i} lacks 'img_path' or 'target'")
        target = _target(record["target"], f"{json_path}: record {i}")
        if items and len(target) != len(items[0][1]):
            raise ValueError(f"{json_path}: record {i} has {len(target)} target values, record 0 has "
                             f"{len(items[0][1])}")
        path = Path(record["img_path"])
        items.append((path if path.is_absolute() else base / path, target))
    return items


def is_ternary(items: Sequence[LabelledImage]) -> bool:
    """Whether targets are ternary (1 / 0 ignored / -1 negative): a JSON list is as soon as one value is -1."""
    return any(v == -1 for _, target in items for v in target)


def voc_year_folder(root: str | Path) -> Path:
    """The VOC year folder: ``root`` itself, or ``VOC2007`` (else ``VOC2012``) inside a ``VOCdevkit``."""
    root = Path(root)
    for year in VOC_YEARS:
        if (root / year / "ImageSets").is_dir():
            return root / year
    if (root / "ImageSets").is_dir():
        return root
    raise FileNotFoundError(f"{root}: no ImageSets/ folder (expected a VOCdevkit, VOC2007 or VOC2012 folder)")


def read_voc_main(root: str | Path, split: str, class_names: Sequence[str] = VOC_CLASSES,
                  difficult: str = "ignore") -> list[LabelledImage]:
    """Parse ``ImageSets/Main/<class>_<split>.txt``: 1 / 0 (difficult only) / -1 mapped by ``difficult``.

    ``difficult``: "ignore" keeps the ternary values, "negative" gives binary targets with 0 for difficult,
    "positive" binary with 1. Images keep the order of the first class's list.
    """
    if difficult not in DIFFICULT_VALUES:
        raise ValueError(f"difficult must be one of {', '.join(DIFFICULT_VALUES)}, got {difficult!r}")
    folder = voc_year_folder(root)
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
    mapping = DIFFICULT_VALUES[difficult]
    return [(folder / "JPEGImages" / f"{image_id}.jpg", tuple(mapping[v] for v in values))
            for image_id, values in labels.items()]


class COCOInstances(NamedTuple):
    """A COCO instances file as multi-label targets: items, class names and category ids (ascending, 0..C-1)."""

    items: list[LabelledImage]
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]


def read_coco_instances(annotation_file: str | Path, image_dir: str | Path, keep_empty: bool = False
                        ) -> COCOInstances:
    """Parse a COCO instances JSON: sorted category ids -> 0..C-1, images by id, unannotated ones left out.

    As the reference preparation script; ``keep_empty=True`` keeps unannotated images with an all-zero target.
    """
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
    items = []
    for image in images:
        classes = present.get(image["id"], set())
        if classes or keep_empty:
            items.append((Path(image_dir) / image["file_name"],
                          tuple(1 if c in classes else 0 for c in range(len(categories)))))
    return COCOInstances(items, tuple(c["name"] for c in categories), tuple(c["id"] for c in categories))


# ------------------------------------------------------------------------------------------ layout detection

def _description(root: Path) -> dict:
    """The dataset card ``dataset.json`` of a folder, or {} when there is none."""
    path = root / "dataset.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _require_exists(path: Path, layouts: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path} (make the embedded one with "
                                f"`python -m training make-dataset`, or pass {layouts})")
    return path


def _unknown_layout(path: Path, layouts: str) -> ValueError:
    return ValueError(f"{path}: not a dataset layout this loader knows; accepted: {layouts}")


def _voc_year(path: Path, needs: str, prefer: tuple[str, ...]) -> tuple[str, Path] | None:
    """("voc2007" | "voc2012", year folder) for a VOC2007/VOC2012 folder or a VOCdevkit holding one."""
    if path.name in VOC_YEARS:
        return (path.name.lower(), path) if (path / needs).is_dir() else None
    for year in prefer:
        for folder in (path / year, path / "VOCdevkit" / year):
            if (folder / needs).is_dir():
                return year.lower(), folder
    return None


def json_twin(train_file: str | Path) -> Path:
    """The test list beside a reference training list (trainval_voc07 -> test_voc07, train_coco -> val_coco)."""
    train_file = Path(train_file)
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


def json_list_names(train_file: str | Path, num_classes: int) -> tuple[str, ...] | None:
    """Class names for a reference JSON list: dataset.json beside it, else VOC/COCO/WIDER by file name and count."""
    train_file = Path(train_file)
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


def coco_image_dir(annotation_file: str | Path, split: str, image_dir: str | Path | None = None) -> Path:
    """The folder holding ``split``'s images: ``image_dir`` (or its ``split`` sibling / child) or the usual layout."""
    annotation_file = Path(annotation_file)
    if image_dir is not None:
        image_dir = Path(image_dir)
        candidates = [image_dir / split, image_dir.parent / split, image_dir]
    else:
        base = annotation_file.parent.parent if annotation_file.parent.name == "annotations" else annotation_file.parent
        candidates = [base / split, base / "images" / split, annotation_file.parent / split]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"COCO image folder for {split} not found (looked for "
                            f"{', '.join(str(c) for c in dict.fromkeys(candidates))}); pass image_dir")


def _json_start(path: Path) -> str:
    """The first non-blank character of a file ('[' for a JSON list, '{' for a COCO file)."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return chr(head[0]) if head else ""


@dataclass(frozen=True)
class ClassificationLayout:
    """Where a classification dataset's train and test annotations are, found without parsing them.

    ``train`` / ``test``: the JSON lists, the COCO instances files, or the VOC year folder (both). ``train_split`` /
    ``test_split``: the VOC ImageSets/Main split names, the COCO image folder names ("train2014", "val2014"), or the
    JSON lists' stems. ``image_dir``: COCO only, where the images were said to be.
    """

    source: str
    root: Path
    train: Path
    test: Path
    train_split: str
    test_split: str
    image_dir: Path | None = None

    def coco_images(self, split: str) -> Path:
        """The image folder of COCO split ``split`` (``train_split`` or ``test_split``)."""
        return coco_image_dir(self.train, split, self.image_dir)


def _coco_layout(path: Path, image_dir: Path | None) -> ClassificationLayout:
    stem = path.stem
    if "train" not in stem:
        raise ValueError(f"{path}: pass the COCO training instances file (e.g. instances_train2014.json); "
                         "its val twin beside it becomes the test split")
    at = stem.rfind("train")
    val_stem = stem[:at] + "val" + stem[at + len("train"):]
    val_file = path.with_name(val_stem + path.suffix)
    if not val_file.is_file():
        raise FileNotFoundError(f"COCO test split not found: looked for {val_file} beside {path}")
    return ClassificationLayout("coco", path, path, val_file, stem[at:], val_stem[at:], image_dir)


def classification_layout(data: str | Path, image_dir: str | Path | None = None) -> ClassificationLayout:
    """Detect the classification layout at ``data`` (see the module docstring); ``image_dir`` only for COCO."""
    path = _require_exists(Path(data), CLASSIFICATION_LAYOUTS)
    if path.is_dir() and (path / "train.json").is_file() and (path / "test.json").is_file():
        return ClassificationLayout("json", path, path / "train.json", path / "test.json", "train", "test")
    if path.is_file() and path.suffix.lower() == ".json":
        if _json_start(path) == "[":
            test = json_twin(path)
            return ClassificationLayout("json", path, path, test, path.stem, test.stem)
        return _coco_layout(path, Path(image_dir) if image_dir is not None else None)
    if path.is_dir() and (found := _voc_year(path, "ImageSets/Main", ("VOC2007", "VOC2012"))):
        source, folder = found
        train_split, test_split = ("trainval", "test") if source == "voc2007" else ("train", "val")
        return ClassificationLayout(source, path, folder, folder, train_split, test_split)
    raise _unknown_layout(path, CLASSIFICATION_LAYOUTS)


@dataclass(frozen=True)
class SegmentationLayout:
    """A VOC-style segmentation folder (JPEGImages, SegmentationClass, SegmentationObject), its splits and classes."""

    source: str
    root: Path
    folder: Path
    train_split: str
    test_split: str
    class_names: tuple[str, ...]


def segmentation_layout(data: str | Path) -> SegmentationLayout:
    """Detect the segmentation layout at ``data`` (see the module docstring)."""
    path = _require_exists(Path(data), SEGMENTATION_LAYOUTS)
    if not path.is_dir():
        raise _unknown_layout(path, SEGMENTATION_LAYOUTS)
    lists = path / "ImageSets" / "Segmentation"
    if found := _voc_year(path, "ImageSets/Segmentation", ("VOC2012", "VOC2007")):
        source, folder = found
        return SegmentationLayout(source, path, folder, "train", "val", VOC_SEGMENTATION_CLASSES)
    if lists.is_dir() and (path / "SegmentationClass").is_dir():
        test_split = "test" if (lists / "test.txt").is_file() or not (lists / "val.txt").is_file() else "val"
        description = _description(path)
        if not description:
            return SegmentationLayout("voc-style", path, path, "train", test_split, VOC_SEGMENTATION_CLASSES)
        names = description.get("segmentation_classes")
        if names is None:
            raise ValueError(f"{path}/dataset.json lacks 'segmentation_classes'; the class list is needed")
        return SegmentationLayout("embedded", path, path, "train", test_split, tuple(names))
    raise _unknown_layout(path, SEGMENTATION_LAYOUTS)


def segmentation_ids(folder: str | Path, split: str) -> list[str]:
    """Image ids of ``ImageSets/Segmentation/<split>.txt`` in a VOC-style folder, in file order."""
    list_file = Path(folder) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"split list not found: {list_file} (split {split!r})")
    return [line.strip() for line in list_file.read_text().splitlines() if line.strip()]


def segmentation_paths(folder: str | Path, image_id: str) -> tuple[Path, Path, Path]:
    """Image, class-map and instance-map paths of ``image_id`` in a VOC-style folder."""
    folder = Path(folder)
    return (folder / "JPEGImages" / f"{image_id}.jpg", folder / "SegmentationClass" / f"{image_id}.png",
            folder / "SegmentationObject" / f"{image_id}.png")


# ------------------------------------------------------------------------------------------ evaluation sets

@dataclass(frozen=True)
class EvalItem:
    """One test image by path: ``labels`` for classification (None for segmentation), label maps when present."""

    name: str
    image: Path
    labels: tuple[int, ...] | None
    class_map: Path | None
    instance_map: Path | None


@dataclass(frozen=True)
class EvalSample:
    """One decoded test item: RGB uint8 (H, W, 3) image, (C,) int8 labels, uint8 (H, W) maps (or None)."""

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    class_map: np.ndarray | None
    instance_map: np.ndarray | None


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, naming the path when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable image") from None


def _read_map(path: Path, shape: tuple[int, ...], image: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    labels = read_label_png(path)
    if labels.shape != shape:
        raise ValueError(f"{path}: label map {labels.shape[0]}x{labels.shape[1]} but image {image} is "
                         f"{shape[0]}x{shape[1]}")
    return labels


@dataclass(frozen=True)
class EvalSet:
    """The test split of a dataset: items by path, read one at a time with ``read``.

    Classification labels follow ``robustness.metrics``: with ``ternary`` True they hold 1 (positive), -1
    (negative) and 0 (difficult only, ignored), as VOC2007 test and the reference JSON lists give them; otherwise
    1 / 0 with 0 negative. Pass ``ignore_zero=ternary`` to ``multilabel_metrics`` / ``average_precision`` (their
    default, detecting -1, agrees whenever a -1 is present). Segmentation ``class_names`` start with "background";
    ``source`` names the layout: "json", "voc2007", "voc2012", "coco", "embedded" or "voc-style".
    """

    task: str
    class_names: tuple[str, ...]
    items: tuple[EvalItem, ...]
    source: str
    root: Path
    ternary: bool

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> np.ndarray:
        """All classification labels as an (N, C) int8 array, without reading images."""
        if self.task != Task.CLASSIFICATION:
            raise ValueError(f"a {self.task} set has no classification targets")
        return np.array([item.labels for item in self.items], dtype=np.int8).reshape(len(self), len(self.class_names))

    def read(self, index: int) -> EvalSample:
        """Decode item ``index``: the image, its labels, and its label maps at the image's resolution."""
        item = self.items[index]
        image = read_rgb(item.image)
        shape = image.shape[:2]
        class_map = _read_map(item.class_map, shape, item.image) if item.class_map is not None else None
        instance_map = _read_map(item.instance_map, shape, item.image) if item.instance_map is not None else None
        labels = np.array(item.labels, dtype=np.int8) if item.labels is not None else None
        return EvalSample(item.name, image, labels, class_map, instance_map)


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def annotation_files(layout: ClassificationLayout) -> list[Path]:
    """The files a classification layout's test split is parsed from (the VOC class lists, or one JSON file)."""
    if layout.source in ("json", "coco"):
        return [layout.test, layout.test.parent / "dataset.json"] if layout.source == "json" else [layout.test]
    return [voc_year_folder(layout.test) / "ImageSets" / "Main" / f"{name}_{layout.test_split}.txt"
            for name in VOC_CLASSES]


def _classification_test(layout: ClassificationLayout, checkpoint: Checkpoint | None = None
                         ) -> tuple[list[LabelledImage], tuple[str, ...], bool]:
    """The test split's items, class names and whether its targets are ternary (train annotations unread)."""
    if layout.source == "json":
        items = read_json_list(layout.test, checkpoint=checkpoint)
        num_classes = len(items[0][1])
        # The twin lies beside the training list and keeps its name hint, so it names the classes alike.
        return items, json_list_names(layout.test, num_classes) or generic_class_names(num_classes), is_ternary(items)
    if layout.source == "coco":
        coco = read_coco_instances(layout.test, layout.coco_images(layout.test_split))
        return coco.items, coco.class_names, False
    return read_voc_main(layout.test, layout.test_split, VOC_CLASSES, difficult="ignore"), VOC_CLASSES, True


def inside(path: Path, within: Path | None) -> bool:
    """Whether ``path`` resolves (symlinks followed) inside ``within`` (always, when ``within`` is None)."""
    if within is None:
        return True
    root = within.resolve()
    target = path.resolve() if path.is_absolute() else (root / path).resolve()
    return target == root or root in target.parents


def confined(path: Path, within: Path | None, what: str) -> Path:
    """``path`` when it lies inside ``within``; else a ValueError that names ``what`` and not the path's target, so
    that nothing outside can be read or probed."""
    if not inside(path, within):
        raise ValueError(f"{what} lies outside the data folder (absolute paths, '..' and symlinks out of it are "
                         "refused)")
    return path


def evaluation_set(data: str | Path, task: str, limit: int | None = None,
                   image_dir: str | Path | None = None, within: Path | None = None,
                   max_annotation_bytes: int | None = None, checkpoint: Checkpoint | None = None) -> EvalSet:
    """The TEST split of any layout the training loaders read (first ``limit`` items if given).

    With ``within`` every file the set names (annotations, images, label maps) must lie inside that folder,
    checked before the file is opened or looked for (a server reading datasets its clients name). With
    ``max_annotation_bytes`` a larger annotation file (JSON list, COCO instances, split or class list, dataset card)
    is refused from its size before it is read (AnnotationTooLarge). ``checkpoint()`` is called between records
    and items; whatever it raises stops the load.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for every item), got {limit}")
    check = checkpoint or (lambda: None)
    if Path(data).is_dir():  # the dataset card is read while the layout is detected
        check_size(confined(Path(data) / "dataset.json", within, "the dataset card"), max_annotation_bytes)
    if task == Task.CLASSIFICATION:
        layout = classification_layout(data, image_dir)
        confined(layout.test, within, "the test annotations")
        for path in annotation_files(layout):
            check_size(confined(path, within, "the test annotations"), max_annotation_bytes)
        parsed, names, ternary = _classification_test(layout, checkpoint)
        items = []
        for index, (path, target) in enumerate(parsed[:limit]):
            check()
            confined(path, within, f"test image {index}")
            # Segmentation annotations beside the images' folder (embedded dataset, VOC) come along when present.
            _, class_map, instance_map = segmentation_paths(path.parent.parent, path.stem)
            maps = [_existing(m) if inside(m, within) else None for m in (class_map, instance_map)]
            items.append(EvalItem(path.stem, path, target, *maps))
        return EvalSet(task, names, tuple(items), layout.source, layout.root, ternary)
    if image_dir is not None:
        raise ValueError("image_dir applies to COCO classification only; segmentation images are in JPEGImages/")
    seg = segmentation_layout(data)
    check_size(confined(seg.folder / "ImageSets" / "Segmentation" / f"{seg.test_split}.txt", within,
                        "the split list"), max_annotation_bytes)
    with_instances = (seg.folder / "SegmentationObject").is_dir()
    items = []
    for index, image_id in enumerate(segmentation_ids(seg.folder, seg.test_split)[:limit]):
        check()
        paths = segmentation_paths(seg.folder, image_id)
        for path, what in zip(paths, ("test image", "label map", "instance map"), strict=True):
            confined(path, within, f"{what} {index}")
        image, class_map, instance_map = paths
        items.append(EvalItem(image_id, image, None, class_map, instance_map if with_instances else None))
    return EvalSet(task, seg.class_names, tuple(items), seg.source, seg.root, False)


def training_images(data: str | Path, task: str) -> list[Path]:
    """Image paths of the TRAIN split of any layout the training loaders read (calibration, never evaluation)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == Task.SEGMENTATION:
        seg = segmentation_layout(data)
        ids = segmentation_ids(seg.folder, seg.train_split)
        return [segmentation_paths(seg.folder, image_id)[0] for image_id in ids]
    layout = classification_layout(data)
    if layout.source == "json":
        return [path for path, _ in read_json_list(layout.train)]
    if layout.source == "coco":
        return [path for path, _ in read_coco_instances(layout.train, layout.coco_images(layout.train_split)).items]
    return [path for path, _ in read_voc_main(layout.train, layout.train_split, VOC_CLASSES, difficult="ignore")]
