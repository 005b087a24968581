"""``scipy.ndimage.zoom(image, (f, f, 1), order=1)`` of a float (H, W, C) image, the same values in numpy.

scipy's order-1 zoom (``mode="constant"``, ``grid_mode=False``; scipy/ndimage/src/ni_interpolation.c,
``NI_ZoomShift``, and ni_splines.c for the weights) maps output index k of an axis to the input coordinate
``k * (n_in - 1) / (n_out - 1)`` and takes, per output value in double precision, the sum over the 2 x 2 x 2
neighbours (last axis fastest) of ``value * w_row * w_col * w_channel``, multiplied in that order. An axis's
weights are ``w0 = 1 - (c - floor(c))`` and ``w1 = 1 - w0``; a neighbour past the last index is mirrored; an
output whose coordinate rounds past the last index is the constant 0 (zoom 1.27 of 126 rows to 160 does this
to the last row). The channel axis has zoom 1, so its coordinates are whole: weights 1 and 0, and the second
neighbour adds an exact 0. Here the same products and sums run as whole-array numpy operations, for the
top-left ``keep`` rows and columns only (what zoom blur keeps of each zoomed copy).

Each (input shape, zoom) is checked once per process against scipy on a random image; where the two differ in
any bit (another scipy, another platform), scipy's own zoom is used for that shape from then on.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
from scipy.ndimage import zoom as scipy_zoom

_LOCK = threading.Lock()
_VERIFIED: dict[tuple[tuple[int, ...], float, tuple[int, int], type], bool] = {}


@lru_cache(maxsize=256)
def _axis(n_in: int, n_out: int, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First and second neighbour indices and weights of output indices 0..min(n_out, keep)-1 along one axis."""
    step = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    coordinate = np.arange(min(n_out, keep), dtype=np.float64) * step
    start = np.floor(coordinate)
    w0 = 1.0 - (coordinate - start)
    w1 = 1.0 - w0
    i0 = start.astype(np.intp)
    i1 = i0 + 1
    i1 = np.where(i1 >= n_in, 2 * n_in - 2 - i1, i1) if n_in > 1 else np.zeros_like(i1)
    outside = coordinate > n_in - 1  # a rounding step past the end: constant mode gives cval (0) there
    w0[outside] = w1[outside] = 0.0
    i0[outside] = i1[outside] = 0
    for shared in (i0, i1, w0, w1):  # cached: every later zoom of this shape reads them
        shared.setflags(write=False)
    return i0, i1, w0, w1


def _numpy_zoom(image: np.ndarray, factor: float, keep: tuple[int, int]) -> np.ndarray:
    rows, cols = (round(n * factor) for n in image.shape[:2])
    r0, r1, wr0, wr1 = _axis(image.shape[0], rows, keep[0])
    c0, c1, wc0, wc1 = _axis(image.shape[1], cols, keep[1])
    values = image.astype(np.float64)
    upper = np.take(values, r0, axis=0)  # value * w_row, before the columns are picked (a copy changes nothing)
    upper *= wr0[:, None, None]
    lower = np.take(values, r1, axis=0)
    lower *= wr1[:, None, None]
    wc0, wc1 = wc0[None, :, None], wc1[None, :, None]
    total = np.take(upper, c0, axis=1)
    total *= wc0
    term = np.take(upper, c1, axis=1)
    term *= wc1
    total += term
    for source, column, weight in ((lower, c0, wc0), (lower, c1, wc1)):
        np.take(source, column, axis=1, out=term)
        term *= weight
        total += term
    return total.astype(image.dtype)


def _scipy_zoom(image: np.ndarray, factor: float, keep: tuple[int, int]) -> np.ndarray:
    return scipy_zoom(image, (factor, factor, 1), order=1)[: keep[0], : keep[1]]


def _matches_scipy(shape: tuple[int, ...], factor: float, keep: tuple[int, int], dtype: type = np.float32) -> bool:
    probe = np.random.default_rng(len(shape) + shape[0] * 7919 + shape[1]).random(shape).astype(dtype)
    return bool(np.array_equal(_numpy_zoom(probe, factor, keep), _scipy_zoom(probe, factor, keep)))


def zoom_rows_cols(image: np.ndarray, factor: float, keep: tuple[int, int]) -> np.ndarray:
    """``scipy.ndimage.zoom(image, (factor, factor, 1), order=1)[:keep[0], :keep[1]]`` for a float32 or float64
    (H, W, C) image, bit for bit, in its dtype (other dtypes go to scipy)."""
    if image.dtype not in (np.float32, np.float64) or image.ndim != 3:
        return _scipy_zoom(image, factor, keep)
    key = (image.shape, float(factor), keep, image.dtype.type)
    with _LOCK:
        same = _VERIFIED.get(key)
        if same is None:
            same = _VERIFIED[key] = _matches_scipy(image.shape, factor, keep, image.dtype.type)
    return _numpy_zoom(image, factor, keep) if same else _scipy_zoom(image, factor, keep)
