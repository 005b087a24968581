"""The embedded dataset: write procedural scenes as a VOC-style folder, byte-for-byte from a seed.

Layout written under ``out_dir`` (ids are ``train_000000``..., ``test_000000``...)::

    JPEGImages/<id>.jpg                 RGB, JPEG quality 90
    SegmentationClass/<id>.png          VOC-palette PNG: 0 background, 1..10 EMBEDDED_CLASSES, 255 void
    SegmentationObject/<id>.png         VOC-palette PNG: 0 background, 1..K instances, 255 void
    ImageSets/Main/{train,test}.txt     image ids, one a line
    ImageSets/Main/<class>_{split}.txt  "<id>  1" / "<id> -1" (VOC2007 classification lists)
    ImageSets/Segmentation/{train,test}.txt
    train.json, test.json               [{"img_path": "JPEGImages/<id>.jpg", "target": [10 x 0/1]}]
    dataset.json                        classes, seed, sizes, rules and per-split statistics

``img_path`` is relative to the dataset folder (the folder holding the JSON list). Scene ``i`` of a
split depends only on (seed, split, i), so changing ``n_train`` never changes the test images.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from models.classnames import EMBEDDED_CLASSES
from training.datasets.palette import VOID_LABEL, save_label_png
from training.datasets.scenes import SIZE_BUCKETS, Scene, SceneConfig, render_scene

SPLIT_CODES = {"train": 0, "test": 1}
JPEG_QUALITY = 90
WRITTEN_ENTRIES = ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets",
                   "train.json", "test.json", "dataset.json")


def image_id(split: str, index: int) -> str:
    """File stem of scene ``index`` of ``split``."""
    return f"{split}_{index:06d}"


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws scene ``index`` of ``split``: independent of every other scene."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def _check_arguments(n_train: int, n_test: int, image_size: int, seed: int, config: SceneConfig) -> None:
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got n_train={n_train}, n_test={n_test}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if config.max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {config.max_objects}")
    if config.min_visible < 1:
        raise ValueError(f"min_visible must be >= 1 pixel, got {config.min_visible}")
    if config.void_width < 0:
        raise ValueError(f"void_width must be >= 0, got {config.void_width}")


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    existing = [name for name in WRITTEN_ENTRIES if (out / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"output folder {out} already holds a dataset ({', '.join(existing)}); "
                         "pass overwrite=True (--overwrite) to replace it")
    for name in existing:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Main",
                "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def write_scene(out: Path, stem: str, scene: Scene) -> None:
    """Write the image and both label PNGs of one scene."""
    Image.fromarray(scene.image).save(out / "JPEGImages" / f"{stem}.jpg", format="JPEG", quality=JPEG_QUALITY)
    save_label_png(scene.class_map, out / "SegmentationClass" / f"{stem}.png")
    save_label_png(scene.instance_map, out / "SegmentationObject" / f"{stem}.png")


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _write_split_lists(out: Path, split: str, stems: list[str], targets: list[list[int]]) -> None:
    _write_lines(out / "ImageSets" / "Main" / f"{split}.txt", stems)
    _write_lines(out / "ImageSets" / "Segmentation" / f"{split}.txt", stems)
    for c, name in enumerate(EMBEDDED_CLASSES):
        _write_lines(out / "ImageSets" / "Main" / f"{name}_{split}.txt",
                     [f"{stem} {1 if t[c] else -1:2d}" for stem, t in zip(stems, targets, strict=True)])
    records = [{"img_path": f"JPEGImages/{stem}.jpg", "target": t} for stem, t in zip(stems, targets, strict=True)]
    (out / f"{split}.json").write_text(json.dumps(records) + "\n")


def _split_statistics(scenes_objects: list, targets: list[list[int]]) -> dict[str, Any]:
    kept = [o for objects in scenes_objects for o in objects if o.instance_id > 0]
    buckets = Counter(o.size_bucket for o in kept)
    return {
        "images": len(targets),
        "instances": len(kept),
        "dropped_as_hidden": sum(1 for objects in scenes_objects for o in objects if o.instance_id == 0),
        "instances_per_size": {name: buckets.get(name, 0) for name in SIZE_BUCKETS},
        "images_per_class": {name: int(sum(t[c] for t in targets)) for c, name in enumerate(EMBEDDED_CLASSES)},
    }


def make_dataset(out_dir: str | Path, n_train: int = 1000, n_test: int = 300, image_size: int = 224,
                 seed: int = 0, *, max_objects: int = 6, min_visible: int = 12, void_width: int = 1,
                 overwrite: bool = False, progress: bool = True) -> Path:
    """Generate the embedded VOC-style dataset in ``out_dir`` and return its path."""
    config = SceneConfig(image_size=image_size, max_objects=max_objects, min_visible=min_visible,
                         void_width=void_width)
    _check_arguments(n_train, n_test, image_size, seed, config)
    out = Path(out_dir)
    _prepare_folder(out, overwrite)
    statistics = {}
    bar = tqdm(total=n_train + n_test, desc="make-dataset", unit="img", disable=not progress)
    for split, count in (("train", n_train), ("test", n_test)):
        stems, targets, objects = [], [], []
        for index in range(count):
            stem = image_id(split, index)
            scene = render_scene(scene_rng(seed, split, index), config)
            write_scene(out, stem, scene)
            stems.append(stem)
            targets.append(scene.target)
            objects.append(scene.objects)
            bar.update()
        _write_split_lists(out, split, stems, targets)
        statistics[split] = _split_statistics(objects, targets)
    bar.close()
    description = {
        "name": "embedded-shapes",
        "classes": list(EMBEDDED_CLASSES),
        "segmentation_classes": ["background", *EMBEDDED_CLASSES],
        "void_label": VOID_LABEL,
        "seed": seed,
        "image_size": image_size,
        "splits": {"train": n_train, "test": n_test},
        "img_path": "relative to this folder",
        "jpeg_quality": JPEG_QUALITY,
        "scene_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "presence_rule": f"an instance exists only with >= {min_visible} visible pixels; "
                         "thinner remains are void (255) and do not count in the target",
        "size_buckets": "COCO: small < 32^2 <= medium < 96^2 <= large, by visible pixel area",
        "statistics": statistics,
    }
    (out / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m training make-dataset``."""
    parser.add_argument("out_dir", help="folder to write the VOC-style dataset into")
    parser.add_argument("--n-train", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--n-test", type=int, default=300, help="test images (default 300)")
    parser.add_argument("--image-size", type=int, default=224, help="square image side in pixels (default 224)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes (default 0)")
    parser.add_argument("--max-objects", type=int, default=6, help="objects drawn per image, at most (default 6)")
    parser.add_argument("--min-visible", type=int, default=12,
                        help="visible pixels an object needs to count as present (default 12)")
    parser.add_argument("--void-width", type=int, default=1, help="void band around objects, pixels (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> Path:
    """Run ``make-dataset`` from parsed arguments; print where the dataset went."""
    out = make_dataset(args.out_dir, args.n_train, args.n_test, args.image_size, args.seed,
                       max_objects=args.max_objects, min_visible=args.min_visible, void_width=args.void_width,
                       overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {args.n_train} train + {args.n_test} test images to {out}")
    return out
