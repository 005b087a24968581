"""ImageNet-C's glass blur with the pixel shuffle vectorised: the same pixels as ``imagecorruptions.glass_blur``.

The library walks the image pixel by pixel (rows, then columns, both downwards from the far edge), drawing
``(dx, dy) = np.random.randint(-d, d, size=2)`` for each pixel and running
``x[h, w], x[h', w'] = x[h', w'], x[h, w]``. Both sides of that tuple are views into ``x``, so the second
assignment writes back what the first one put there: the "swap" is the copy ``x[h, w] = x[h + dy, w + dx]``.

Since the walk goes downwards, a source pixel that the walk has already passed (a later row, or the same row
and a later column) holds its value from this pass, and any other holds its value from before the pass. So each
pixel's final value is a chain of such references that ends at a pixel of the pass's input: chains are followed
for all pixels at once by pointer jumping (a few fancy-index steps instead of H x W Python iterations).
The random draws are those of the loop, made in one call: legacy ``randint`` draws each value from whole
32-bit words, so one (n, 2) call yields the n pairs of n size-2 calls and leaves the generator in the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# sigma, max_delta, iterations per severity 1..5, as in imagecorruptions 1.1.2
GLASS_BLUR_PARAMETERS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))


def shuffle_sources(height: int, width: int, delta: int, offsets: np.ndarray) -> np.ndarray:
    """Flat index, into the pass's input, of each pixel's value after one pass of the library's shuffle.

    ``offsets`` holds the pass's (dx, dy) draws in walk order: rows ``height - delta`` down to ``delta + 1``,
    and in each row columns ``width - delta`` down to ``delta + 1``.
    """
    rows = np.arange(height - delta, delta, -1)
    cols = np.arange(width - delta, delta, -1)
    if rows.size == 0 or cols.size == 0:
        return np.arange(height * width)
    offsets = np.asarray(offsets).reshape(rows.size, cols.size, 2)
    h, w = np.meshgrid(rows, cols, indexing="ij")
    dx, dy = offsets[..., 0], offsets[..., 1]
    target = (h * width + w).ravel()
    source = ((h + dy) * width + (w + dx)).ravel()
    # the walk has already passed the source: a later row, or this row and a later column
    passed = ((dy > 0) | ((dy == 0) & (dx > 0))).ravel()
    source_of = np.arange(height * width)
    source_of[target] = source
    follow = np.zeros(height * width, dtype=bool)
    follow[target] = passed
    # pointer jumping: a followed link is replaced by its target's link until every link ends in the input
    while follow.any():
        jump = np.flatnonzero(follow)
        nxt = source_of[jump]
        source_of[jump] = source_of[nxt]
        follow[jump] = follow[nxt]
    return source_of


def shuffle_pixels(image: np.ndarray, delta: int, iterations: int) -> np.ndarray:
    """The library's local pixel shuffle of a (H, W, C) array, drawing from numpy's global generator."""
    height, width = image.shape[:2]
    walked = max(height - 2 * delta, 0) * max(width - 2 * delta, 0)
    flat = image.reshape(height * width, -1)
    for _ in range(iterations):
        offsets = np.random.randint(-delta, delta, size=(walked, 2))
        flat = flat[shuffle_sources(height, width, delta, offsets)]
    return flat.reshape(image.shape)


def glass_blur(x: Any, severity: int, gaussian: Callable[..., np.ndarray]) -> np.ndarray:
    """``imagecorruptions.corruptions.glass_blur`` with the shuffle vectorised; the same float64 output.

    ``gaussian`` is the ``gaussian(image, sigma, multichannel=)`` filter the library module calls (the project's
    compat shim), so both blurs are the very same computation.
    """
    sigma, delta, iterations = GLASS_BLUR_PARAMETERS[severity - 1]
    blurred = np.uint8(gaussian(np.array(x) / 255.0, sigma=sigma, multichannel=True) * 255)
    shuffled = shuffle_pixels(blurred, delta, iterations)
    return np.clip(gaussian(shuffled / 255.0, sigma=sigma, multichannel=True), 0, 1) * 255
