"""robustness.linear_zoom gives scipy's order-1 zoom bit for bit, for every zoom factor of zoom blur."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import zoom as scipy_zoom

from robustness.fast_corruptions import ZOOM_FACTORS, clipped_zoom
from robustness.linear_zoom import _matches_scipy, _numpy_zoom, zoom_rows_cols

FACTORS = sorted({float(f) for factors in ZOOM_FACTORS for f in factors})
SHAPES = [(160, 160), (224, 224), (37, 50), (32, 32), (97, 131), (33, 200)]


@pytest.mark.parametrize("shape", SHAPES)
def test_numpy_zoom_equals_scipy_for_every_zoom_blur_factor(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(shape[0] * shape[1]).random((*shape, 3), dtype=np.float32)
    for factor in FACTORS:
        rows, cols = int(np.ceil(shape[0] / factor)), int(np.ceil(shape[1] / factor))
        top, left = (shape[0] - rows) // 2, (shape[1] - cols) // 2
        crop = image[top:top + rows, left:left + cols]
        expected = scipy_zoom(crop, (factor, factor, 1), order=1)[: shape[0], : shape[1]]
        got = _numpy_zoom(crop, factor, shape)
        assert got.dtype == np.float32
        assert got.shape == expected.shape, factor
        assert np.array_equal(got, expected), (shape, factor)
        assert np.array_equal(clipped_zoom(image, factor), expected)


def test_a_coordinate_rounded_past_the_end_gives_scipy_s_zero_row() -> None:
    # 160 px at zoom 1.27: 126 rows zoomed to 160; 159 * (125 / 159) is 125.00000000000001 > 125
    image = np.ones((126, 126, 3), dtype=np.float32)
    expected = scipy_zoom(image, (1.27, 1.27, 1), order=1)
    assert expected[-1].max() == 0.0 and expected[:, -1].max() == 0.0 and expected[-2, -2, 0] == 1.0
    assert np.array_equal(zoom_rows_cols(image, 1.27, (160, 160)), expected)


def test_each_shape_and_factor_is_checked_against_scipy_and_other_dtypes_go_to_scipy() -> None:
    assert _matches_scipy((144, 144, 3), 1.11, (160, 160))
    image = np.random.default_rng(3).random((40, 40, 3))  # float64: scipy keeps float64
    got = zoom_rows_cols(image, 1.2, (48, 48))
    assert got.dtype == np.float64
    assert np.array_equal(got, scipy_zoom(image, (1.2, 1.2, 1), order=1))
