"""``imagecorruptions`` 1.1.2 imported as it runs on numpy 2 and scikit-image 0.26 (``library`` is its module).

The library (the maintained package of the benchmark's reference code) predates numpy 2 and scikit-image 0.19;
three names it calls are gone or unseeded there. They are restored for that module alone (nothing global
changes): ``np.float_`` (fog), ``gaussian(multichannel=)`` (glass blur) and skimage's ``random_noise``, which
now takes its own generator (impulse noise; here drawn from numpy's seeded global one).
"""

from __future__ import annotations

import types
import warnings
from typing import Any

import numpy as np

with warnings.catch_warnings():  # it imports pkg_resources, which warns about its own deprecation
    warnings.simplefilter("ignore")
    import imagecorruptions
    import imagecorruptions.corruptions as library

import skimage
from skimage.filters import gaussian as _gaussian
from skimage.util import random_noise as _random_noise

__all__ = ["gaussian_compat", "imagecorruptions", "library"]


class _NumpyWithFloat(types.ModuleType):
    """numpy as imagecorruptions expects it: ``np.float_`` (removed in numpy 2) is float64."""

    def __getattr__(self, name: str) -> Any:
        return np.float64 if name == "float_" else getattr(np, name)


class _SkimageWithSeededNoise(types.ModuleType):
    """skimage as imagecorruptions expects it: ``util.random_noise`` draws from numpy's global generator."""

    util = types.SimpleNamespace(random_noise=lambda image, **kwargs: _random_noise_compat(image, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(skimage, name)


def gaussian_compat(image: np.ndarray, sigma: float = 1, multichannel: bool | None = None, **kwargs: Any) -> Any:
    """skimage's ``gaussian`` with the library's ``multichannel=`` spelling (now ``channel_axis=-1``)."""
    return _gaussian(image, sigma=sigma, channel_axis=-1 if multichannel else None, **kwargs)


def _random_noise_compat(image: np.ndarray, **kwargs: Any) -> np.ndarray:
    return _random_noise(image, rng=int(np.random.randint(2**31)), **kwargs)


library.np = _NumpyWithFloat("numpy")
library.gaussian = gaussian_compat
library.sk = _SkimageWithSeededNoise("skimage")
