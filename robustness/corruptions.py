"""The 15 common corruptions of ImageNet-C (Hendrycks & Dietterich 2019) at severities 1-5, from `imagecorruptions`.

``corrupt(image, name, severity, seed)`` returns a corrupted uint8 copy; severity 0 is the identity. The same
seed gives the same pixels: the library draws from numpy's global generator, so each call seeds it under a lock
and puts the caller's state back afterwards.

Some corruptions are computed by this project's faster code instead (``FAST_CORRUPTIONS``), which makes the same
draws in the same order and returns the very same pixels as the library (tests/robustness compare them);
``corrupt(..., reference=True)`` runs the library's own code for every corruption.

The library is imported, with the names it needs on numpy 2 restored, by ``robustness.corruption_library``.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from robustness.corruption_library import gaussian_compat, imagecorruptions
from robustness.fast_corruptions import brightness, elastic_transform, frost, zoom_blur
from robustness.glass_blur import glass_blur
from robustness.snow import snow

CORRUPTIONS: tuple[str, ...] = tuple(imagecorruptions.get_corruption_names("common"))
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # pixels: the library's smallest supported image side
MAX_SEVERITY = SEVERITIES[-1]
_LOCK = threading.Lock()

# name -> f(PIL image, severity) with the library function's output for the same global generator state
FAST_CORRUPTIONS: dict[str, Callable[[Any, int], Any]] = {
    "glass_blur": partial(glass_blur, gaussian=gaussian_compat),
    "zoom_blur": zoom_blur,
    "frost": frost,
    "brightness": brightness,
    "elastic_transform": elastic_transform,
    "snow": snow,
}


def check_corruption(name: str, severity: int) -> None:
    """Raise ValueError unless ``name`` is one of the 15 corruptions and ``severity`` lies in 0..5."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if not isinstance(severity, int | np.integer) or not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be an integer 0..{MAX_SEVERITY} (0 = no corruption), got {severity!r}")


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 0, reference: bool = False) -> np.ndarray:
    """A corrupted uint8 (H, W, 3) copy of a uint8 RGB image; severity 0 returns it unchanged.

    ``reference`` runs imagecorruptions' own code even where ``FAST_CORRUPTIONS`` has the same pixels faster.
    """
    check_corruption(name, severity)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image {image.shape[0]}x{image.shape[1]} is too small to corrupt: both sides must be "
                         f">= {MIN_SIDE} pixels")
    if severity == 0:
        return image.copy()
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            fast = None if reference else FAST_CORRUPTIONS.get(name)
            if fast is None:
                out = imagecorruptions.corrupt(np.ascontiguousarray(image), severity=int(severity),
                                               corruption_name=name)
            else:  # what imagecorruptions.corrupt does around the corruption it calls
                out = np.uint8(fast(Image.fromarray(np.ascontiguousarray(image)), int(severity)))
        finally:
            np.random.set_state(state)
    return np.asarray(out, dtype=np.uint8)[: image.shape[0], : image.shape[1]]


def parse_corruptions(spec: str) -> tuple[str, ...]:
    """``all`` (or ``common``) -> the 15 names; ``none`` -> (); else comma-separated names, checked."""
    key = spec.strip().lower()
    if key in ("all", "common"):
        return CORRUPTIONS
    if key in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in key.split(",") if part.strip()))
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption {', '.join(unknown)}; choose from all, none or {', '.join(CORRUPTIONS)}")
    return names


def parse_severities(spec: str | Sequence[int]) -> tuple[int, ...]:
    """``1-5``, ``3`` or ``1,3,5`` -> sorted distinct severities in 1..5."""
    if not isinstance(spec, str):
        values = [int(v) for v in spec]
    else:
        values = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            low, _, high = part.partition("-")
            try:
                bounds = (int(low), int(high or low))
            except ValueError:
                raise ValueError(f"severities: {part!r} is not a number or a range like 1-5") from None
            if not all(1 <= bound <= MAX_SEVERITY for bound in bounds):  # before a range is expanded
                raise ValueError(f"severities must lie in 1..{MAX_SEVERITY} (e.g. 1-5 or 1,3,5), got {spec!r}")
            values.extend(range(bounds[0], bounds[1] + 1))
    if not values or any(not 1 <= v <= MAX_SEVERITY for v in values):
        raise ValueError(f"severities must lie in 1..{MAX_SEVERITY} (e.g. 1-5 or 1,3,5), got {spec!r}")
    return tuple(sorted(set(values)))
