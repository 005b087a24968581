"""Calibration error, bootstrap resampling and percentile confidence intervals.

Every figure of a report is a point estimate on all images plus a 95% percentile interval over bootstrap
resamples of the images. One (B, N) table of resample indices is drawn per run and shared by every
condition and every model, so differences between models are paired and a model compared with itself
differs by exactly 0 in every resample.
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Any

import numpy as np

ECE_BINS = 15
CI_LEVEL = 0.95


def expected_calibration_error(scores: np.ndarray, positives: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of binary decisions as a fraction: sum over bins of |B|/N * |acc_B - conf_B|.

    Each (image, class) pair is one decision with confidence = its sigmoid score and outcome = whether the
    class is present. The scores fall into ``bins`` equal-width bins over [0, 1] (bin k holds
    k/bins <= s < (k+1)/bins; a score of exactly 1 goes to the last bin); conf_B is the mean score and acc_B
    the fraction of positives in bin B; empty bins add nothing. NaN when there is no decision.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    if scores.shape != positives.shape:
        raise ValueError(f"{scores.size} scores but {positives.size} outcomes")
    if scores.size == 0:
        return math.nan
    which = np.minimum((scores * bins).astype(np.int64), bins - 1)
    score_sum = np.bincount(which, weights=scores, minlength=bins)
    positive_sum = np.bincount(which, weights=positives, minlength=bins)
    return float(np.abs(positive_sum - score_sum).sum() / scores.size)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) image indices drawn with replacement from a generator seeded by ``seed``."""
    if n < 1:
        raise ValueError("bootstrap needs at least one image")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(b"bootstrap")]))
    dtype = np.int32 if n < 2**31 else np.int64
    return rng.integers(0, n, size=(int(resamples), n), dtype=dtype)


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> list[float | None]:
    """[low, high] percentile interval of the finite samples; [None, None] when there are none."""
    values = np.asarray(samples, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [None, None]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


def finite_or_none(value: float) -> float | None:
    """A float for JSON: NaN and infinities become None."""
    return float(value) if value is not None and np.isfinite(value) else None


def figure(value: float, samples: np.ndarray) -> dict[str, Any]:
    """{"value", "ci": [low, high]} of a point estimate and its bootstrap samples (JSON-ready)."""
    return {"value": finite_or_none(value), "ci": percentile_interval(samples)}


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean ignoring NaN, NaN (without a warning) where everything is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray | float:
    """numerator / denominator with NaN where the denominator is 0 (no warning)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.divide(numerator, denominator)
    return np.where(np.isfinite(out), out, np.nan) if isinstance(out, np.ndarray) else (
        out if math.isfinite(out) else math.nan)
