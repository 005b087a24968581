"""Segmenter answers: class-map statistics and PNGs, against hand-computed values."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from common.scores import class_map, resize_class_map
from server.postprocess import palette_png, region_statistics

NAMES = ["a", "b", "c"]


def test_region_statistics_counts_areas_and_eight_connected_instances():
    classes = np.zeros((40, 40), dtype=np.uint8)
    classes[0:2, 0:2] = 1  # 4 px
    classes[2:4, 2:4] = 1  # touches the first diagonally: same instance
    classes[10:15, 10:15] = 1  # 25 px, separate
    classes[20:40, 0:40] = 2  # 800 px
    stats = {entry["name"]: entry for entry in region_statistics(classes, NAMES)}
    assert stats["b"]["pixels"] == 33 and stats["b"]["instances"] == {"count": 2, "S": 2, "M": 0, "L": 0}
    assert stats["c"]["pixels"] == 800 and stats["c"]["fraction"] == 0.5
    assert stats["a"]["pixels"] == 1600 - 833
    big = np.ones((100, 100), dtype=np.uint8)
    assert region_statistics(big, NAMES)[0]["instances"] == {"count": 1, "S": 0, "M": 0, "L": 1}


def test_class_map_png_keeps_class_ids_and_resizes_nearest():
    logits = np.zeros((3, 2, 2), dtype=np.float32)
    logits[1, 0, 0] = logits[2, 1, 1] = 5.0
    classes = class_map(logits)
    assert classes.tolist() == [[1, 0], [0, 2]]
    big = resize_class_map(classes, (4, 4))
    assert big.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]]
    image = Image.open(io.BytesIO(palette_png(big)))
    assert image.mode == "P" and np.asarray(image).tolist() == big.tolist()
    assert image.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
