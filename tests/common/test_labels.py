"""The label-map conventions shared by training, metrics and the server: values pinned, torch kept out."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from scipy import ndimage

from common.labels import BACKGROUND, EIGHT_CONNECTED, SIZE_BUCKETS, VOC_PALETTE, VOID, size_bucket


def test_background_and_void_are_the_voc_values():
    assert (BACKGROUND, VOID) == (0, 255)


def test_size_buckets_follow_coco_areas():
    assert SIZE_BUCKETS == ("S", "M", "L")
    assert [size_bucket(a) for a in (1, 1023, 1024, 9215, 9216, 10**6)] == ["S", "S", "M", "M", "L", "L"]


def test_voc_palette_has_the_known_colours():
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    assert VOC_PALETTE[0].tolist() == [0, 0, 0]
    assert VOC_PALETTE[1].tolist() == [128, 0, 0]
    assert VOC_PALETTE[2].tolist() == [0, 128, 0]
    assert VOC_PALETTE[15].tolist() == [192, 128, 128]  # VOC "person"
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]  # void
    assert len({tuple(rgb) for rgb in VOC_PALETTE.tolist()}) == 256


def test_eight_connected_joins_diagonal_neighbours():
    pixels = np.eye(3, dtype=bool)
    assert ndimage.label(pixels, structure=EIGHT_CONNECTED)[1] == 1
    assert ndimage.label(pixels)[1] == 3  # scipy's default (4-connected) would split them


def test_the_shared_module_and_the_server_postprocessing_do_not_import_torch():
    code = ("import sys, common.labels, robustness.metrics, server.images, server.postprocess; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
