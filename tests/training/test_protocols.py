"""Visible-label protocol, per-size targets and chance, against the scene's own objects and by hand."""

import json
from pathlib import Path

import numpy as np
import pytest

from training.datasets import make_dataset
from training.protocols import chance_map, render_test_scenes, size_targets, visible_labels


@pytest.fixture(scope="module")
def scenes_and_files(tmp_path_factory: pytest.TempPathFactory):
    data = make_dataset(tmp_path_factory.mktemp("cls") / "d", n_train=2, n_test=24, scenes="classification", seed=4,
                        progress=False)
    scenes, config = render_test_scenes(data)
    targets = np.array([r["target"] for r in json.loads((Path(data) / "test.json").read_text())])
    return scenes, config, targets


def test_without_a_mask_the_visible_labels_are_the_files_labels(scenes_and_files) -> None:
    scenes, config, targets = scenes_and_files
    assert len(scenes) == 24
    assert np.array_equal(np.stack([visible_labels(s, config) for s in scenes]), targets)


def test_hiding_everything_leaves_no_label_and_hiding_one_instance_drops_only_its_share(scenes_and_files) -> None:
    scenes, config, _ = scenes_and_files
    for scene in scenes:
        assert (visible_labels(scene, config, np.ones((40, 40), bool)) == -1).all()
    # A scene with a labelled class held by a single instance: hide exactly that instance's pixels.
    for scene in scenes:
        labels = np.array(scene.labels(config))
        kept = [o for o in scene.objects if o.instance_id > 0]
        single = [o for o in kept if labels[o.class_index] == 1
                  and sum(k.class_index == o.class_index for k in kept) == 1]
        if single:
            break
    obj = single[0]
    hole = scene.instance_map == obj.instance_id
    after = visible_labels(scene, config, hole)
    assert after[obj.class_index] == -1
    others = [c for c in range(len(labels)) if c != obj.class_index]
    assert np.array_equal(after[others], labels[others])  # instance pixels are disjoint: nothing else changes
    # Leave 39% of its drawn area visible (if that is over 400 px it is still only difficult: 0).
    rows, cols = np.nonzero(hole)
    keep = int(0.39 * obj.drawn_area)
    partial = hole.copy()
    partial[rows[:keep], cols[:keep]] = False
    expected = 0 if keep >= config.min_visible else -1
    assert visible_labels(scene, config, partial)[obj.class_index] == expected


def test_size_targets_split_every_label_into_exactly_one_bucket(scenes_and_files) -> None:
    scenes, config, targets = scenes_and_files
    per_size = {s: size_targets(scenes, config, s) for s in ("S", "M", "L")}
    positives = sum((t == 1).astype(int) for t in per_size.values())
    assert np.array_equal(positives, (targets == 1).astype(int))  # each label positive in one bucket only
    for t in per_size.values():
        assert np.array_equal(t == -1, targets == -1)  # absent classes are every bucket's negatives


def test_chance_ignores_difficult_labels_as_the_metric_does() -> None:
    targets = np.array([[1, -1], [0, -1], [-1, 1], [-1, -1]])
    # class 0: 1 positive of 3 decided images (the difficult one ignored); class 1: 1 of 4.
    assert chance_map(targets) == pytest.approx(100 * (1 / 3 + 1 / 4) / 2)
