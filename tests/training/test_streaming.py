"""Streaming scenes: fresh every epoch, reproducible from the seed, disjoint from validation and test."""

import numpy as np
import torch

from training.datasets.scenes import SCENE_CONFIGS, render_scene
from training.datasets.streaming import STREAM_CODE, StreamingScenes, jpeg_round_trip, validation_scenes
from training.datasets.synthetic import scene_rng


def raw(stream: StreamingScenes, index: int) -> np.ndarray:
    return stream.scene(index).image


def test_same_seed_same_scenes_and_new_epoch_new_scenes() -> None:
    config = SCENE_CONFIGS["classification"]
    a = StreamingScenes(config, seed=5, length=4, task="classification", image_size=64)
    b = StreamingScenes(config, seed=5, length=4, task="classification", image_size=64)
    assert all(np.array_equal(raw(a, i), raw(b, i)) for i in range(4))
    first = [raw(a, i) for i in range(4)]
    a.set_epoch(1)
    assert not any(np.array_equal(first[i], raw(a, i)) for i in range(4))
    a.set_epoch(0)
    assert np.array_equal(first[2], raw(a, 2))
    other = StreamingScenes(config, seed=6, length=4, task="classification", image_size=64)
    assert not np.array_equal(first[0], raw(other, 0))


def test_stream_differs_from_test_split_and_validation() -> None:
    config = SCENE_CONFIGS["segmentation"]
    stream = StreamingScenes(config, seed=0, length=3, task="segmentation", image_size=64)
    test_scene = render_scene(scene_rng(0, "test", 0), config).image
    assert not np.array_equal(raw(stream, 0), test_scene)
    val = validation_scenes(config, seed=0, length=2, task="segmentation", image_size=64)
    image, class_map, instance_map = stream[0]
    assert image.shape == (3, 64, 64) and class_map.shape == (64, 64) and instance_map.shape == (64, 64)
    assert not torch.equal(val[0][0], stream.__class__(config, 0, 3, "segmentation", 64, train=False)[0][0])


def test_classification_items_follow_the_label_rule() -> None:
    config = SCENE_CONFIGS["classification"]
    stream = StreamingScenes(config, seed=1, length=8, task="classification", image_size=64, train=False)
    for index in range(8):
        _, target = stream[index]
        scene = stream.scene(index)
        expected = [-1] * 10
        for o in scene.objects:
            if o.instance_id:
                clear = o.visible_area >= 400 and o.visible_area >= 0.4 * o.drawn_area
                expected[o.class_index] = max(expected[o.class_index], 1 if clear else 0)
        assert target.tolist() == expected


def test_scene_pool_holds_exactly_the_streamed_scenes_and_is_rendered_once(tmp_path) -> None:
    from training.datasets.streaming import ScenePool

    config = SCENE_CONFIGS["segmentation"]
    pool = ScenePool(tmp_path, config, seed=4, length=3, epochs=2)
    stamp = (pool.folder / "images.npy").stat().st_mtime_ns
    assert ScenePool(tmp_path, config, seed=4, length=3, epochs=2).folder == pool.folder
    assert (pool.folder / "images.npy").stat().st_mtime_ns == stamp  # a second run reuses the files
    streamed = StreamingScenes(config, seed=4, length=3, task="segmentation", image_size=64, train=False)
    pooled = StreamingScenes(config, seed=4, length=3, task="segmentation", image_size=64, train=False, pool=pool)
    for epoch in (0, 1):
        streamed.set_epoch(epoch)
        pooled.set_epoch(epoch)
        for index in range(3):
            for a, b in zip(streamed[index], pooled[index], strict=True):
                assert torch.equal(a, b)
    assert pool.array("images").dtype == np.uint8 and pool.array("images").shape == (6, 224, 224, 3)
    cls = SCENE_CONFIGS["classification"]
    cls_pool = ScenePool(tmp_path, cls, seed=4, length=3, epochs=1, maps=False)
    target = StreamingScenes(cls, seed=4, length=3, task="classification", image_size=64, train=False,
                             pool=cls_pool)[(0, 2)][1]
    assert target.tolist() == cls_pool.item(0, 2)[3].tolist() == StreamingScenes(
        cls, seed=4, length=3, task="classification", image_size=64, train=False)[2][1].tolist()


def test_a_pool_rendered_by_several_processes_holds_the_scenes_in_order(tmp_path) -> None:
    from dataclasses import replace

    from training.datasets.streaming import ScenePool

    config = replace(SCENE_CONFIGS["segmentation"], image_size=48)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    pool = ScenePool(tmp_path, config, seed=7, length=5, epochs=3, workers=2)
    assert torch.equal(torch.rand(3), expected)  # the model initialised next gets the weights it would without a pool
    assert pool.workers == 2
    for k in range(15):
        epoch, index = divmod(k, 5)
        scene = render_scene(np.random.default_rng([7, STREAM_CODE, epoch, index]), config)
        image, class_map, instance_map, labels = pool.item(epoch, index)
        assert np.array_equal(image, np.asarray(jpeg_round_trip(scene.image)))
        assert np.array_equal(class_map, scene.class_map) and np.array_equal(instance_map, scene.instance_map)
        assert labels.tolist() == scene.labels(config)
