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
import contextlib
import json
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from common.labels import EMBEDDED_CLASSES, SMALL_AREA, VOID
from training.datasets.palette import save_label_png
from training.datasets.scenes import (
    BUCKET_NAMES,
    SCENE_CONFIGS,
    Scene,
    SceneConfig,
    SceneObject,
    render_scene,
    rendering_processes,
)

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
    """Targets are 0/1, or ternary 1/0/-1 (0 = difficult only) under a label rule."""
    ternary = any(v == -1 for t in targets for v in t)
    _write_lines(out / "ImageSets" / "Main" / f"{split}.txt", stems)
    _write_lines(out / "ImageSets" / "Segmentation" / f"{split}.txt", stems)
    for c, name in enumerate(EMBEDDED_CLASSES):
        _write_lines(out / "ImageSets" / "Main" / f"{name}_{split}.txt",
                     [f"{stem} {(t[c] if ternary else (1 if t[c] else -1)):2d}"
                      for stem, t in zip(stems, targets, strict=True)])
    records = [{"img_path": f"JPEGImages/{stem}.jpg", "target": t} for stem, t in zip(stems, targets, strict=True)]
    (out / f"{split}.json").write_text(json.dumps(records) + "\n")


def split_statistics(scenes_objects: list, targets: list[list[int]]) -> dict[str, Any]:
    """Instance size shares and label statistics of one split (the dataset card's numbers)."""
    kept = [o for objects in scenes_objects for o in objects if o.instance_id > 0]
    buckets = Counter(o.size_bucket for o in kept)
    positives = [(objects, c) for objects, t in zip(scenes_objects, targets, strict=True)
                 for c, v in enumerate(t) if v == 1]
    largest = [max(o.visible_area for o in objects if o.class_index == c and o.instance_id > 0)
               for objects, c in positives]
    return {
        "images": len(targets),
        "instances": len(kept),
        "dropped_as_hidden": sum(1 for objects in scenes_objects for o in objects if o.instance_id == 0),
        "instances_per_size": {name: buckets.get(name, 0) for name in BUCKET_NAMES.values()},
        "instance_share_per_size": {name: round(buckets.get(name, 0) / max(len(kept), 1), 3)
                                    for name in BUCKET_NAMES.values()},
        "images_per_class": {name: int(sum(t[c] == 1 for t in targets)) for c, name in enumerate(EMBEDDED_CLASSES)},
        "positive_labels_per_image": round(len(positives) / max(len(targets), 1), 3),
        "difficult_labels_per_image": round(sum(v == 0 for t in targets for v in t) / max(len(targets), 1), 3)
        if any(v == -1 for t in targets for v in t) else 0.0,
        "positive_labels_whose_largest_instance_is_under_256px": round(
            sum(a < 256 for a in largest) / max(len(largest), 1), 3),
        "positive_labels_whose_largest_instance_is_small": round(
            sum(a < SMALL_AREA for a in largest) / max(len(largest), 1), 3),
    }


def scene_config(scenes: str = "mixed", image_size: int = 224, **overrides: Any) -> SceneConfig:
    """A named scene configuration (``SCENE_CONFIGS``) at ``image_size``, with the given fields overridden."""
    if scenes not in SCENE_CONFIGS:
        raise ValueError(f"unknown scene configuration {scenes!r}; choose from {', '.join(SCENE_CONFIGS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(SCENE_CONFIGS[scenes], image_size=image_size, **changes)


def config_from_description(description: dict[str, Any]) -> SceneConfig:
    """The SceneConfig a dataset.json was generated with (to stream more scenes of the same kind)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in description["scene_config"].items()
              if k in SceneConfig.__dataclass_fields__}
    return SceneConfig(**fields)


def render_and_write(job: tuple[Path, SceneConfig, int, str, int]) -> tuple[str, list[int], list[SceneObject]]:
    """Render scene ``index`` of ``split`` and write its files; its stem, target and objects."""
    out, config, seed, split, index = job
    stem = image_id(split, index)
    scene = render_scene(scene_rng(seed, split, index), config)
    write_scene(out, stem, scene)
    labelled = config.label_min_pixels or config.label_min_fraction
    return stem, scene.labels(config) if labelled else scene.target, scene.objects


def make_dataset(out_dir: str | Path, n_train: int = 1000, n_test: int = 300, image_size: int = 224,
                 seed: int = 0, *, scenes: str = "mixed", max_objects: int | None = None,
                 min_visible: int | None = None, void_width: int | None = None,
                 overwrite: bool = False, progress: bool = True, workers: int | None = None) -> Path:
    """Generate the embedded VOC-style dataset in ``out_dir`` and return its path (``workers`` processes; by
    default ``rendering_processes``)."""
    config = scene_config(scenes, image_size, max_objects=max_objects, min_visible=min_visible,
                          void_width=void_width)
    _check_arguments(n_train, n_test, image_size, seed, config)
    out = Path(out_dir)
    _prepare_folder(out, overwrite)
    statistics = {}
    jobs = [(out, config, seed, split, index) for split, count in (("train", n_train), ("test", n_test))
            for index in range(count)]
    # Every scene has its own generator, so worker processes render and write them in any order; map keeps it.
    workers = workers or rendering_processes(len(jobs))
    with ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        done = pool.map(render_and_write, jobs, chunksize=8) if pool else map(render_and_write, jobs)
        written = list(tqdm(done, total=len(jobs), desc="make-dataset", unit="img", disable=not progress))
    for split in ("train", "test"):
        rows = [row for job, row in zip(jobs, written, strict=True) if job[3] == split]
        stems, targets, objects = (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [])
        _write_split_lists(out, split, stems, targets)
        statistics[split] = split_statistics(objects, targets)
    description = {
        "name": "embedded-shapes",
        "scenes": scenes,
        "classes": list(EMBEDDED_CLASSES),
        "segmentation_classes": ["background", *EMBEDDED_CLASSES],
        "void_label": VOID,
        "seed": seed,
        "image_size": image_size,
        "splits": {"train": n_train, "test": n_test},
        "img_path": "relative to this folder",
        "jpeg_quality": JPEG_QUALITY,
        "scene_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "presence_rule": f"an instance exists only with >= {config.min_visible} visible pixels; "
                         "thinner remains are void (255) and do not count in the target",
        "label_rule": (f"a class is a label (1) only when one instance shows >= {config.label_min_pixels} pixels "
                       f"and >= {config.label_min_fraction:.0%} of its drawn area; a class whose instances all fail "
                       "that is 'difficult' (0, ignored by evaluation, negative in training)")
        if config.label_min_pixels or config.label_min_fraction else "a class is a label when an instance exists",
        "size_buckets": "COCO: small < 32^2 <= medium < 96^2 <= large, by visible pixel area",
        "statistics": statistics,
    }
    (out / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return out


def main(args: argparse.Namespace) -> Path:
    """Run ``make-dataset`` from parsed arguments; print where the dataset went."""
    out = make_dataset(args.out_dir, args.n_train, args.n_test, args.image_size, args.seed, scenes=args.scenes,
                       max_objects=args.max_objects, min_visible=args.min_visible, void_width=args.void_width,
                       overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {args.n_train} train + {args.n_test} test images to {out}")
    return out
