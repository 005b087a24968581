"""The embedded dataset: VOC-style layout, byte-for-byte determinism, consistent labels, COCO-like sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.labels import EMBEDDED_CLASSES, VOC_PALETTE
from training.__main__ import main as training_main
from training.datasets import make_dataset, read_label_png
from training.datasets.scenes import (
    TEXTURES,
    SceneConfig,
    SceneObject,
    area_bucket,
    class_map_from_instances,
    keep_visible_instances,
    paint_textured,
    render_scene,
    texture,
)
from training.datasets.shapes import place_layers, rasterize, shape_layers

TINY = {"n_train": 6, "n_test": 3, "image_size": 96, "seed": 3, "progress": False}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data", **TINY)


def test_layout_is_voc_style(tiny: Path) -> None:
    ids = {"train": [f"train_{i:06d}" for i in range(6)], "test": [f"test_{i:06d}" for i in range(3)]}
    files = set(tree_bytes(tiny))
    for split, stems in ids.items():
        for stem in stems:
            assert {f"JPEGImages/{stem}.jpg", f"SegmentationClass/{stem}.png",
                    f"SegmentationObject/{stem}.png"} <= files
        assert (tiny / "ImageSets/Main" / f"{split}.txt").read_text().split() == stems
        assert (tiny / "ImageSets/Segmentation" / f"{split}.txt").read_text().split() == stems
        assert all(f"ImageSets/Main/{name}_{split}.txt" in files for name in EMBEDDED_CLASSES)
    assert len(files) == 9 * 3 + 4 + 20 + 3  # images+maps, split lists, class lists, 3 JSON files


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tiny: Path, tmp_path: Path) -> None:
    again = make_dataset(tmp_path / "again", **TINY)
    other = make_dataset(tmp_path / "other", **{**TINY, "seed": 4})
    assert tree_bytes(again) == tree_bytes(tiny)
    assert (other / "JPEGImages/train_000000.jpg").read_bytes() != (tiny / "JPEGImages/train_000000.jpg").read_bytes()


def test_several_processes_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    settings = {**TINY, "n_train": 9, "n_test": 7, "image_size": 48, "scenes": "segmentation"}
    one = make_dataset(tmp_path / "one", **settings, workers=1)
    three = make_dataset(tmp_path / "three", **settings, workers=3)
    assert tree_bytes(one) == tree_bytes(three) and len(tree_bytes(one)) > 3 * 16


def test_test_split_does_not_depend_on_the_train_size(tiny: Path, tmp_path: Path) -> None:
    fewer = make_dataset(tmp_path / "fewer", **{**TINY, "n_train": 2})
    for i in range(3):
        name = f"JPEGImages/test_{i:06d}.jpg"
        assert (fewer / name).read_bytes() == (tiny / name).read_bytes()


def test_json_targets_match_the_classes_in_the_label_maps(tiny: Path) -> None:
    for split in ("train", "test"):
        records = json.loads((tiny / f"{split}.json").read_text())
        assert len(records) == TINY[f"n_{split}"]
        for record in records:
            stem = Path(record["img_path"]).stem
            assert record["img_path"] == f"JPEGImages/{stem}.jpg"
            labels = set(np.unique(read_label_png(tiny / "SegmentationClass" / f"{stem}.png")).tolist()) - {0, 255}
            assert record["target"] == [int(c + 1 in labels) for c in range(10)]


def test_voc_class_lists_agree_with_json_targets(tiny: Path) -> None:
    targets = [r["target"] for r in json.loads((tiny / "train.json").read_text())]
    for c, name in enumerate(EMBEDDED_CLASSES):
        lines = [line.split() for line in (tiny / f"ImageSets/Main/{name}_train.txt").read_text().splitlines()]
        assert [int(label) for _, label in lines] == [1 if t[c] else -1 for t in targets]


def test_instances_are_contiguous_single_class_and_visible(tiny: Path) -> None:
    for class_path in sorted((tiny / "SegmentationClass").glob("*.png")):
        classes = read_label_png(class_path)
        instances = read_label_png(tiny / "SegmentationObject" / class_path.name)
        assert np.array_equal(classes == 255, instances == 255)
        assert np.array_equal(classes == 0, instances == 0)
        ids = sorted(set(np.unique(instances).tolist()) - {0, 255})
        assert ids == list(range(1, len(ids) + 1))
        for k in ids:
            assert len(np.unique(classes[instances == k])) == 1
            assert (instances == k).sum() >= 12


def test_label_pngs_use_the_voc_palette(tiny: Path) -> None:
    with Image.open(tiny / "SegmentationClass/train_000000.png") as image:
        assert image.mode == "P"
        assert np.array_equal(np.array(image.getpalette()[:768]).reshape(256, 3), VOC_PALETTE)


def test_dataset_json_describes_the_run(tiny: Path) -> None:
    description = json.loads((tiny / "dataset.json").read_text())
    assert description["classes"] == list(EMBEDDED_CLASSES)
    assert description["segmentation_classes"][0] == "background"
    assert (description["seed"], description["image_size"]) == (3, 96)
    instances = sum(len(set(np.unique(read_label_png(p)).tolist()) - {0, 255})
                    for p in (tiny / "SegmentationObject").glob("train_*.png"))
    assert sum(description["statistics"]["train"]["instances_per_size"].values()) == instances


def test_sizes_follow_coco_buckets_with_many_small_objects_and_occlusion() -> None:
    objects = [o for i in range(60) for o in render_scene(np.random.default_rng([7, i]), SceneConfig()).objects]
    kept = [o for o in objects if o.instance_id]
    shares = {b: sum(o.size_bucket == b for o in kept) / len(kept) for b in ("small", "medium", "large")}
    assert shares["small"] > 0.4 and shares["medium"] > 0.2 and shares["large"] > 0.03
    assert sum(o.visible_area < o.drawn_area for o in objects) > 10  # occluded by objects or clutter


def test_coco_bucket_boundaries() -> None:
    assert [area_bucket(a) for a in (1023, 1024, 9215, 9216)] == ["small", "medium", "medium", "large"]


def test_hidden_instances_become_void_and_the_rest_renumber() -> None:
    drawn = np.zeros((6, 8), dtype=np.int64)
    drawn[0:4, 0:4] = 1  # 16 px, kept as 1
    drawn[5, 0:5] = 2  # 5 px, hidden
    drawn[0:3, 5:8] = 3  # 9 px... kept only when min_visible <= 9
    objects = [SceneObject(0, 16), SceneObject(3, 5), SceneObject(9, 9)]
    instances = keep_visible_instances(drawn, objects, min_visible=9)
    assert [o.instance_id for o in objects] == [1, 0, 2]
    assert [o.visible_area for o in objects] == [16, 5, 9]
    assert (instances[5, 0:5] == 255).all() and (instances[0:3, 5:8] == 2).all()
    classes = class_map_from_instances(instances, objects, void_width=0)
    assert classes[0, 0] == 1 and classes[0, 7] == 10 and classes[5, 0] == 255


def test_void_band_surrounds_objects_by_void_width() -> None:
    instances = np.zeros((7, 7), dtype=np.uint8)
    instances[3, 3] = 1
    classes = class_map_from_instances(instances, [SceneObject(4, 1, 1, 1)], void_width=1)
    expected = np.zeros((7, 7), dtype=np.uint8)
    expected[2:5, 2:5] = 255
    expected[3, 3] = 5
    assert np.array_equal(classes, expected)
    wider = class_map_from_instances(instances, [SceneObject(4, 1, 1, 1)], void_width=2)
    assert (wider == 255).sum() == 24


def test_painting_a_mask_gives_its_pixels_exactly_the_whole_texture_values_for_every_kind() -> None:
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:30, 8:44] = np.random.default_rng(1).uniform(size=(25, 36)) < 0.6
    kinds = set()
    for seed in range(60):
        canvas = np.full((40, 50, 3), -1.0)
        assert paint_textured(np.random.default_rng(seed), canvas, mask, saturated=True)
        rng = np.random.default_rng(seed)
        rng.uniform(size=6)  # the two colours, as random_colour draws them
        kinds.add(TEXTURES[rng.integers(len(TEXTURES))])
        whole = texture(np.random.default_rng(seed), 25, 36)  # the mask's bounding box
        assert np.array_equal(canvas[5:30, 8:44][mask[5:30, 8:44]], whole[mask[5:30, 8:44]])
        assert np.all(canvas[~mask] == -1.0)
    assert kinds == set(TEXTURES)


def test_texture_values_by_hand() -> None:
    for seed in range(200):
        rng = np.random.default_rng(seed)
        rng.uniform(size=6)
        kind = TEXTURES[rng.integers(len(TEXTURES))]
        tex = texture(np.random.default_rng(seed), 16, 17)
        assert tex.shape == (16, 17, 3)
        if kind == "solid":
            assert np.all(tex == tex[0, 0])
        if kind == "checker":  # cells of 2-7 pixels: the two corners of the first cell are one colour
            assert np.array_equal(tex[0, 0], tex[1, 1]) and len(np.unique(tex.reshape(-1, 3), axis=0)) == 2


def test_shapes_are_distinct_and_ring_has_a_hole() -> None:
    rng = np.random.default_rng(0)
    masks = {name: rasterize(place_layers(shape_layers(name, rng), (16, 16), (15, 15), 0.0), 32, 32)
             for name in EMBEDDED_CLASSES}
    assert not masks["ring"][16, 16] and masks["circle"][16, 16]
    assert len({m.tobytes() for m in masks.values()}) == 10
    with pytest.raises(ValueError, match="pentagon"):
        shape_layers("pentagon", rng)


def test_bad_arguments_and_existing_output_raise_value_error(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_train"):
        make_dataset(tmp_path / "a", n_train=0, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        make_dataset(tmp_path / "b", image_size=16, progress=False)
    with pytest.raises(ValueError, match="already holds a dataset"):
        make_dataset(tiny, **TINY)


def test_overwrite_replaces_a_larger_dataset(tmp_path: Path) -> None:
    make_dataset(tmp_path / "d", **TINY)
    make_dataset(tmp_path / "d", **{**TINY, "n_train": 2}, overwrite=True)
    assert len(list((tmp_path / "d/JPEGImages").glob("train_*.jpg"))) == 2


def test_cli_writes_a_dataset_and_reports_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    argv = ["make-dataset", str(tmp_path / "cli"), "--n-train", "2", "--n-test", "1", "--image-size", "64", "--quiet"]
    assert training_main(argv) == 0
    assert len(json.loads((tmp_path / "cli/train.json").read_text())) == 2
    capsys.readouterr()
    assert training_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: output folder") and err.count("\n") == 1


def test_rendering_uses_one_process_per_64_scenes_at_most_and_no_more_than_the_cores() -> None:
    from common.compute import available_cores
    from training.datasets.scenes import rendering_processes

    assert rendering_processes(0) == rendering_processes(63) == 1
    assert rendering_processes(128) == min(2, available_cores())
    assert rendering_processes(1_000_000) == available_cores()
