"""Seeded irregular occlusion masks bucketed by measured hole ratio (the MSL paper, docs/papers.md).

A mask is a boolean array, True = hole. Shapes (strokes, arcs, blobs, rectangles) are small classes
configured by keyword arguments, in the style of LaMa's mask generators; `make_mask_generator` maps
a preset name to a mixture of them. A ratio range is a half-open interval (lo, hi]: every mask this
module returns has `lo < mask.mean() <= hi`. Masks are reproducible bit for bit from
(seed, size, range, generator name, index): the numpy Generator is seeded through a SeedSequence of
those values, never through Python's salted hash().
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
import struct
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from PIL import Image, ImageDraw

# The Irregular Masks test-set buckets (Liu et al. 2018), as data.
BUCKETS: dict[str, tuple[float, float]] = {
    "b1": (0.01, 0.1),
    "b2": (0.1, 0.2),
    "b3": (0.2, 0.3),
    "b4": (0.3, 0.4),
    "b5": (0.4, 0.5),
    "b6": (0.5, 0.6),
}
RATIO_ALIASES: dict[str, tuple[float, float]] = {
    "low": BUCKETS["b1"],
    "medium": (BUCKETS["b3"][0], BUCKETS["b4"][1]),
    "high": BUCKETS["b6"],
}
RATIO_CHOICES = "low|medium|high|b1..b6|a-b (e.g. 0.2-0.35)"
UNBUCKETED = "unbucketed"
MASK_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

MAX_RATIO_SPEC_LENGTH = 32  # characters; every accepted spelling fits in far fewer
# One side of an "a-b" range: 5, 0.5 or .5, optionally with an exponent (the spellings accepted so far).
# Every character has one way to match (no quantified group repeats), so a failed match costs O(length).
_NUMBER = re.compile(r"(?:\d+(?:\.\d+)?|\.\d+)(?:e[-+]?\d+)?")
# Shapes are scaled so that a typical shape covers a few percent of the image at the high buckets
# and proportionally less for low ratios, so low-ratio masks are still made of several shapes.
_REFERENCE_RATIO = 0.3
_MIN_SCALE = 0.3
_MAX_SCALE = 1.3
# Bounded work per batch: draws per mask (a repeat of an earlier mask is redrawn), and redraws per batch
# (at least this many, else one per mask). Seeds include the draw number, so these bounds never change a
# mask that they let through.
MASK_ATTEMPTS = 20
MIN_RETRY_BUDGET = 64


class MaskRatioError(ValueError):
    """A hole-ratio range that is not understood, or that cannot give the masks asked for at that size."""


class RatioRange(NamedTuple):
    """A parsed hole-ratio range (lo, hi]: every mask function takes it as it is, without parsing it again."""

    lo: float
    hi: float


@dataclass(frozen=True)
class MaskRatio:
    """A hole-ratio spec as it was given (bucket, alias or "a-b") and the range it names, parsed once."""

    spec: str
    range: RatioRange

    @classmethod
    def parse(cls, spec: str) -> MaskRatio:
        """The spec and its range; MaskRatioError for a spec ``parse_ratio`` refuses."""
        return cls(spec, parse_ratio(spec))

    def describe(self) -> dict[str, Any]:
        """The spec and its range as an answer shows them."""
        return {"spec": self.spec, "range": list(self.range)}


def ratio_range(ratio: str | Sequence[float]) -> RatioRange:
    """A range already parsed as it is, else ``parse_ratio(ratio)``."""
    return ratio if isinstance(ratio, RatioRange) else parse_ratio(ratio)


def parse_ratio(spec: str | Sequence[float]) -> RatioRange:
    """Turn a bucket name, alias, "a-b" string or (lo, hi) pair into a ratio range (lo, hi]; MaskRatioError if
    it is not one.

    Linear in the length of the spec and refused at once past MAX_RATIO_SPEC_LENGTH characters: the
    range is split at its one separating '-' (one not right after an exponent's 'e') and each side
    must fully match an unambiguous number pattern before float() reads it.
    """
    if isinstance(spec, str):
        if len(spec) > MAX_RATIO_SPEC_LENGTH:
            raise MaskRatioError(
                f"mask ratio spec {spec[:12]!r}... is {len(spec):,} characters long; the limit is "
                f"{MAX_RATIO_SPEC_LENGTH}; expected one of {RATIO_CHOICES}"
            )
        key = spec.strip().lower()
        if key in BUCKETS:
            return RatioRange(*BUCKETS[key])
        if key in RATIO_ALIASES:
            return RatioRange(*RATIO_ALIASES[key])
        bounds = _range_bounds(key)
        if bounds is None:
            raise MaskRatioError(f"mask ratio {spec!r} is not understood; expected one of {RATIO_CHOICES}")
        lo, hi = bounds
    else:
        try:
            lo, hi = (float(v) for v in spec)
        except (TypeError, ValueError):
            raise MaskRatioError(
                f"mask ratio {spec!r} is not understood; expected one of {RATIO_CHOICES} or a (lo, hi) pair"
            ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise MaskRatioError(f"mask ratio range ({lo}, {hi}] must be finite; expected one of {RATIO_CHOICES}")
    if lo >= hi:
        raise MaskRatioError(f"mask ratio range ({lo}, {hi}] is empty: lo must be below hi")
    if lo < 0.0 or hi > 1.0:
        raise MaskRatioError(
            f"mask ratio range ({lo}, {hi}] lies outside (0, 1]: bounds must satisfy 0 <= lo < hi <= 1")
    return RatioRange(lo, hi)


def _range_bounds(key: str) -> tuple[float, float] | None:
    """(lo, hi) of an "a-b" spec, or None if it is not one; one pass over the string, no backtracking."""
    separators = [i for i, char in enumerate(key) if char == "-" and (i == 0 or key[i - 1] != "e")]
    if len(separators) != 1:
        return None
    left, right = key[: separators[0]].strip(), key[separators[0] + 1 :].strip()
    if _NUMBER.fullmatch(left) is None or _NUMBER.fullmatch(right) is None:
        return None
    return float(left), float(right)


def bucket_of(ratio: float) -> str | None:
    """Name of the b1..b6 bucket holding a measured hole ratio, or None if it is outside them all."""
    for name, (lo, hi) in BUCKETS.items():
        if lo < ratio <= hi:
            return name
    return None


def reachable_counts(h: int, w: int, lo: float, hi: float) -> tuple[int, int]:
    """Smallest and largest hole pixel count k with lo < k/(h*w) <= hi; MaskRatioError if there is none."""
    total = h * w
    k_min = min(max(math.floor(lo * total) + 1, 0), total + 1)
    while k_min > 0 and (k_min - 1) / total > lo:
        k_min -= 1
    while k_min <= total and k_min / total <= lo:
        k_min += 1
    k_max = min(max(math.floor(hi * total), 0), total)
    while k_max > 0 and k_max / total > hi:
        k_max -= 1
    while k_max < total and (k_max + 1) / total <= hi:
        k_max += 1
    if k_min > k_max:
        raise MaskRatioError(
            f"mask ratio range ({lo}, {hi}] is unreachable for a {h}x{w} mask: "
            f"hole ratios come in steps of 1/{total} and none lies in the range"
        )
    return k_min, k_max


class MaskShape(Protocol):
    """One kind of occluding shape; draws a single instance into a canvas (value 1 = hole)."""

    def __call__(self, draw: ImageDraw.ImageDraw, h: int, w: int, rng: np.random.Generator, scale: float) -> float:
        """Draw one shape (sizes are fractions of sqrt(h*w) times `scale`); return a bound on its pixel count."""
        ...


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


class StrokeShape:
    """A thick polyline with round joints; each segment draws its own width and turning angle."""

    def __init__(
        self,
        vertices: tuple[int, int] = (2, 6),
        max_turn: float = 2.0,
        length: tuple[float, float] = (0.08, 0.3),
        width: tuple[float, float] = (0.02, 0.09),
    ) -> None:
        self.vertices, self.max_turn, self.length, self.width = vertices, max_turn, length, width

    def __call__(self, draw: ImageDraw.ImageDraw, h: int, w: int, rng: np.random.Generator, scale: float) -> float:
        """Draw one stroke starting at a random point."""
        side = math.sqrt(h * w) * scale
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * math.pi)
        bound = 0.0
        for _ in range(int(rng.integers(self.vertices[0], self.vertices[1] + 1))):
            angle += rng.uniform(-self.max_turn, self.max_turn)
            step = _uniform(rng, self.length) * side
            nx = min(max(x + step * math.cos(angle), 0.0), w - 1.0)
            ny = min(max(y + step * math.sin(angle), 0.0), h - 1.0)
            width = max(1, round(_uniform(rng, self.width) * side))
            draw.line([(x, y), (nx, ny)], fill=1, width=width)
            r = width / 2
            draw.ellipse([nx - r, ny - r, nx + r, ny + r], fill=1)
            bound += (step + width + 4) * (width + 4) + (width + 3) ** 2
            x, y = nx, ny
        return bound


class ArcShape:
    """A thick arc of a random ellipse."""

    def __init__(
        self,
        radius: tuple[float, float] = (0.08, 0.3),
        extent_degrees: tuple[float, float] = (60.0, 300.0),
        width: tuple[float, float] = (0.02, 0.08),
    ) -> None:
        self.radius, self.extent_degrees, self.width = radius, extent_degrees, width

    def __call__(self, draw: ImageDraw.ImageDraw, h: int, w: int, rng: np.random.Generator, scale: float) -> float:
        """Draw one arc centred at a random point."""
        side = math.sqrt(h * w) * scale
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = _uniform(rng, self.radius) * side, _uniform(rng, self.radius) * side
        start = rng.uniform(0, 360)
        end = start + _uniform(rng, self.extent_degrees)
        width = max(1, round(_uniform(rng, self.width) * side))
        draw.arc([cx - rx, cy - ry, cx + rx, cy + ry], start, end, fill=1, width=width)
        along = math.radians(end - start) * max(rx, ry)
        return min((2 * rx + 3) * (2 * ry + 3), (along + width + 4) * (width + 4))


class BlobShape:
    """A filled, rotated ellipse with a wobbly outline (jitter 0 gives a plain ellipse)."""

    def __init__(
        self,
        radius: tuple[float, float] = (0.04, 0.16),
        aspect: tuple[float, float] = (0.4, 1.0),
        jitter: float = 0.3,
        points: int = 14,
    ) -> None:
        self.radius, self.aspect, self.jitter, self.points = radius, aspect, jitter, points

    def __call__(self, draw: ImageDraw.ImageDraw, h: int, w: int, rng: np.random.Generator, scale: float) -> float:
        """Draw one blob centred at a random point."""
        side = math.sqrt(h * w) * scale
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = _uniform(rng, self.radius) * side
        aspect = _uniform(rng, self.aspect)
        tilt = rng.uniform(0, math.pi)
        angles = np.linspace(0, 2 * math.pi, self.points, endpoint=False)
        wobble = 1.0 + self.jitter * rng.uniform(-1.0, 1.0, self.points)
        u, v = r * wobble * np.cos(angles), r * aspect * wobble * np.sin(angles)
        xs = cx + u * math.cos(tilt) - v * math.sin(tilt)
        ys = cy + u * math.sin(tilt) + v * math.cos(tilt)
        draw.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=1)
        return (2 * r * (1 + self.jitter) + 3) ** 2


class RectangleShape:
    """An axis-aligned filled rectangle."""

    def __init__(self, size: tuple[float, float] = (0.05, 0.3)) -> None:
        self.size = size

    def __call__(self, draw: ImageDraw.ImageDraw, h: int, w: int, rng: np.random.Generator, scale: float) -> float:
        """Draw one rectangle at a random position."""
        side = math.sqrt(h * w) * scale
        rw, rh = _uniform(rng, self.size) * side, _uniform(rng, self.size) * side
        x0, y0 = rng.uniform(-rw / 2, w - rw / 2), rng.uniform(-rh / 2, h - rh / 2)
        draw.rectangle([x0, y0, x0 + rw, y0 + rh], fill=1)
        return (rw + 3) * (rh + 3)


MASK_SHAPES: dict[str, type] = {
    "stroke": StrokeShape,
    "arc": ArcShape,
    "blob": BlobShape,
    "rectangle": RectangleShape,
}


def make_shape(name: str, **kwargs: Any) -> MaskShape:
    """Build a shape by name ("stroke", "arc", "blob", "rectangle") with keyword overrides."""
    if name not in MASK_SHAPES:
        raise ValueError(f"unknown mask shape {name!r}; expected one of {', '.join(MASK_SHAPES)}")
    return MASK_SHAPES[name](**kwargs)


class IrregularMaskGenerator:
    """Draws random shapes until the hole count falls in the requested range (lo, hi].

    A target count is drawn uniformly among the reachable counts and shapes are added until the
    count reaches it. The count is measured only when the shapes' area bounds say it could have
    reached the target. On an overshoot past hi, everything drawn since the last measurement is cut
    along a random straight line: its new pixels are kept in order along a random direction until the
    count equals the target. After `max_shapes` shapes the rest of the image is cut the same way, so
    every reachable range is hit exactly and no rejection loop can spin.
    """

    def __init__(self, name: str, shapes: Mapping[str, float], max_shapes: int = 400, **shape_kwargs: Any) -> None:
        unknown = set(shape_kwargs) - set(shapes)
        if unknown:
            raise ValueError(f"keyword arguments {sorted(unknown)} name shapes not used by {name!r}")
        weights = np.array([float(shapes[s]) for s in shapes])
        if len(weights) == 0 or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"shape weights {dict(shapes)} must be non-negative with a positive sum")
        self.name = name
        self.shapes = [make_shape(s, **shape_kwargs.get(s, {})) for s in shapes]
        self.cumulative = np.cumsum(weights / weights.sum())
        self._cumulative = self.cumulative.tolist()  # bisect on a list: np.searchsorted's pick, without its overhead
        self.max_shapes = max_shapes

    def __call__(self, h: int, w: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
        """Return one (h, w) bool mask whose measured ratio lies in (lo, hi]."""
        k_min, k_max = reachable_counts(h, w, lo, hi)
        target = int(rng.integers(k_min, k_max + 1))
        scale = min(_MAX_SCALE, max(_MIN_SCALE, math.sqrt(target / (h * w) / _REFERENCE_RATIO)))
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        checkpoint, checkpoint_count, unmeasured = canvas.copy(), 0, 0.0
        for _ in range(self.max_shapes):
            pick = min(bisect.bisect_right(self._cumulative, rng.random()), len(self.shapes) - 1)
            unmeasured += self.shapes[pick](draw, h, w, rng, scale)
            if checkpoint_count + unmeasured < target:
                continue
            count = int(np.count_nonzero(np.asarray(canvas)))  # pixels are 0 or 1: faster than histogram()[1]
            if count > k_max:
                return _cut_new_pixels(np.asarray(checkpoint), np.asarray(canvas), target, rng)
            if count >= target:
                return np.asarray(canvas).astype(bool)
            checkpoint, checkpoint_count, unmeasured = canvas.copy(), count, 0.0
        full = np.ones((h, w), dtype=np.uint8)
        return _cut_new_pixels(np.asarray(canvas), full, target, rng)


def _cut_new_pixels(before: np.ndarray, after: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Keep all of `before` plus the pixels new in `after` that come first along a random direction."""
    mask = before.astype(bool)
    need = target - int(np.count_nonzero(mask))
    new_rows, new_cols = np.nonzero(after.astype(bool) & ~mask)
    angle = rng.uniform(0, 2 * math.pi)
    order = np.argsort(new_cols * math.cos(angle) + new_rows * math.sin(angle), kind="stable")[:need]
    mask[new_rows[order], new_cols[order]] = True
    return mask


MASK_GENERATOR_PRESETS: dict[str, dict[str, float]] = {
    "irregular": {"stroke": 0.5, "arc": 0.2, "blob": 0.3},
    "irregular_rect": {"stroke": 0.45, "arc": 0.15, "blob": 0.25, "rectangle": 0.15},
    "strokes": {"stroke": 1.0},
    "blobs": {"blob": 1.0},
}


def make_mask_generator(name: str = "irregular", **shape_kwargs: Any) -> IrregularMaskGenerator:
    """Build a preset generator; keyword arguments are per-shape kwargs, e.g. stroke={"width": (.05, .1)}."""
    if name not in MASK_GENERATOR_PRESETS:
        raise ValueError(f"unknown mask generator {name!r}; expected one of {', '.join(MASK_GENERATOR_PRESETS)}")
    return IrregularMaskGenerator(name, MASK_GENERATOR_PRESETS[name], **shape_kwargs)


def _check_size(h: int, w: int) -> None:
    for label, value in (("h", h), ("w", w)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"mask {label}={value!r} must be a positive integer")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"mask seed {seed!r} must be a non-negative integer")


def _float_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def _mask_rng(
    seed: int, h: int, w: int, lo: float, hi: float, name: str, index: int, attempt: int
) -> np.random.Generator:
    entropy = [seed, h, w, _float_bits(lo), _float_bits(hi), zlib.crc32(name.encode()), index, attempt]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _resolve_generator(generator: str | IrregularMaskGenerator) -> IrregularMaskGenerator:
    return make_mask_generator(generator) if isinstance(generator, str) else generator


def irregular_mask(
    h: int,
    w: int,
    ratio: str | Sequence[float],
    seed: int,
    generator: str | IrregularMaskGenerator = "irregular",
) -> np.ndarray:
    """One (h, w) bool mask (True = hole) with lo < mask.mean() <= hi; equals masks(1, ...)[0]."""
    return masks(1, h, w, ratio, seed, generator)[0]


def masks(
    n: int,
    h: int,
    w: int,
    ratio: str | Sequence[float],
    seed: int,
    generator: str | IrregularMaskGenerator = "irregular",
) -> np.ndarray:
    """An (n, h, w) bool batch of masks in the ratio range, pairwise different.

    Work is bounded: a mask that comes out equal to an earlier one is redrawn at most
    MASK_ATTEMPTS - 1 times, and the whole batch gets max(MIN_RETRY_BUDGET, n) redraws. A range that
    admits fewer than n distinct masks is refused before any drawing; one whose masks the generator
    keeps repeating (e.g. one pixel short of a full mask) is refused when a budget runs out. Both
    raise a ValueError that names the range and the size.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"mask count n={n!r} must be a non-negative integer")
    _check_size(h, w)
    _check_seed(seed)
    n, h, w, seed = int(n), int(h), int(w), int(seed)
    lo, hi = parsed = ratio_range(ratio)
    check_mask_batch(n, h, w, parsed)
    gen = _resolve_generator(generator)
    out = np.empty((n, h, w), dtype=bool)
    seen: set[bytes] = set()
    retries_left = max(MIN_RETRY_BUDGET, n)
    for index in range(n):
        for attempt in range(MASK_ATTEMPTS):
            if attempt and not retries_left:
                raise _too_narrow(n, h, w, lo, hi, f"the batch used up its {max(MIN_RETRY_BUDGET, n)} redraws of "
                                  f"repeated masks by mask {index}")
            retries_left -= attempt > 0
            mask = gen(h, w, lo, hi, _mask_rng(seed, h, w, lo, hi, gen.name, index, attempt))
            digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
            if digest not in seen:
                break
        else:
            raise _too_narrow(n, h, w, lo, hi, f"mask {index} was still a repeat after {MASK_ATTEMPTS} draws")
        seen.add(digest)
        out[index] = mask
    return out


class MaskCache:
    """A thread-safe LRU of mask batches bounded by their bytes; keys are ``masks``' arguments.

    Masks do not depend on the image, so a server asked again for the same (n, size, range, seed), on any
    image, finds them here instead of drawing them again (about 1 ms per 160x160 mask). Batches are stored
    read-only and handed out as they are: callers must not write to them.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, n: int, h: int, w: int, ratio: str | Sequence[float], seed: int,
                 generator: str = "irregular") -> np.ndarray:
        """``masks(n, h, w, ratio, seed, generator)``, drawn once and then served from the cache."""
        parsed = ratio_range(ratio)
        key = (int(n), int(h), int(w), parsed, int(seed), generator)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        batch = masks(n, h, w, parsed, seed, generator)  # drawn outside the lock: other requests are not held
        batch.setflags(write=False)
        if batch.nbytes > self.max_bytes:
            return batch
        with self._lock:
            if key not in self._entries:
                self._entries[key] = batch
                self.bytes += batch.nbytes
            while self.bytes > self.max_bytes:
                self.bytes -= self._entries.popitem(last=False)[1].nbytes
        return batch


MASK_CACHE_BYTES = 64 * 1024 * 1024
cached_masks = MaskCache(MASK_CACHE_BYTES)


def distinct_mask_count(h: int, w: int, lo: float, hi: float, cap: int) -> int:
    """How many distinct (h, w) masks have a hole ratio in (lo, hi], counted up to ``cap`` (min(count, cap))."""
    k_min, k_max = reachable_counts(h, w, lo, hi)
    total, count = h * w, 0
    for k in range(k_min, k_max + 1):  # ends after at most ~2 * cap.bit_length() + 1 counts
        m = min(k, total - k)
        if m >= cap.bit_length():  # C(total, m) >= 2**m because total >= 2m
            return cap
        count += math.comb(total, m)
        if count >= cap:
            return cap
    return count


def check_mask_batch(n: int, h: int, w: int, ratio: str | Sequence[float]) -> RatioRange:
    """Refuse, before any drawing, a range that no (h, w) mask can hit or that admits fewer than n distinct masks.

    Returns the parsed (lo, hi). Cheap (no mask is drawn), so a server can call it before reading an upload.
    """
    lo, hi = parsed = ratio_range(ratio)
    k_min, k_max = reachable_counts(h, w, lo, hi)
    available = distinct_mask_count(h, w, lo, hi, n)
    if available < n:
        raise MaskRatioError(
            f"mask ratio range ({lo}, {hi}] admits only {available} distinct {h}x{w} mask"
            f"{'' if available == 1 else 's'} ({_hole_counts(h, w, k_min, k_max)}), fewer than the {n} requested; "
            f"widen the range or ask for at most {available}"
        )
    return parsed


def _hole_counts(h: int, w: int, k_min: int, k_max: int) -> str:
    counts = f"{k_min}" if k_min == k_max else f"{k_min}..{k_max}"
    return f"{counts} hole pixels of {h * w}"


def _too_narrow(n: int, h: int, w: int, lo: float, hi: float, why: str) -> MaskRatioError:
    k_min, k_max = reachable_counts(h, w, lo, hi)
    return MaskRatioError(
        f"mask ratio range ({lo}, {hi}] is too narrow for {n} different {h}x{w} masks "
        f"({_hole_counts(h, w, k_min, k_max)}): {why}; widen the range or ask for fewer masks"
    )


def resize_mask(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a (..., H, W) mask to (..., h, w), sampling at pixel centres."""
    _check_size(h, w)
    mask = np.asarray(mask)
    if mask.ndim < 2:
        raise ValueError(f"mask of shape {mask.shape} must have at least 2 dimensions (..., H, W)")
    src_h, src_w = mask.shape[-2:]
    if (src_h, src_w) == (h, w):
        return mask
    # Source index floor((i + 0.5) * src / dst), in exact integer arithmetic.
    rows = (2 * np.arange(h, dtype=np.int64) + 1) * src_h // (2 * h)
    cols = (2 * np.arange(w, dtype=np.int64) + 1) * src_w // (2 * w)
    return mask[..., rows[:, None], cols[None, :]]


def _is_torch_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _spatial_axes(
    shape: tuple[int, ...], mask_hw: tuple[int, ...], channels_last: bool | None, is_torch: bool
) -> tuple[int, int]:
    """Axes of H and W in an image of this shape: (H,W), (H,W,C)/(C,H,W), or batched (N,...)."""
    ndim = len(shape)
    if ndim == 2:
        return 0, 1
    if ndim not in (3, 4):
        raise ValueError(f"image of shape {shape} must be (H,W), (C,H,W), (H,W,C) or batched (N,...)")
    if channels_last is None and is_torch:
        channels_last = False
    if channels_last is None:
        last_ok, first_ok = shape[-1] in (1, 3, 4), shape[-3] in (1, 3, 4)
        if last_ok and first_ok:  # e.g. (3, 5, 3): prefer the layout whose H, W match the mask
            last_ok, first_ok = shape[-3:-1] == mask_hw, shape[-2:] == mask_hw
        if last_ok == first_ok:
            raise ValueError(f"cannot tell the channel axis of image shape {shape}; pass channels_last=True/False")
        channels_last = last_ok
    return (ndim - 3, ndim - 2) if channels_last else (ndim - 2, ndim - 1)


def apply_mask(image: Any, mask: Any, channels_last: bool | None = None) -> Any:
    """Return image * (1 - mask) (the MSL paper: holes become 0) for numpy arrays or torch tensors.

    `image` is the normalised image: (H,W), (C,H,W), (H,W,C) or a batch (N,C,H,W)/(N,H,W,C); torch
    tensors are taken as channels-first. `mask` is (H,W) for one mask shared by the batch, or (N,H,W)
    for one mask per image; it is nearest-resized when its size differs from the image's.
    """
    is_torch = _is_torch_tensor(image)
    shape = tuple(image.shape)
    mask_np = mask.detach().cpu().numpy() if _is_torch_tensor(mask) else np.asarray(mask)
    if mask_np.ndim not in (2, 3):
        raise ValueError(f"mask of shape {mask_np.shape} must be (H,W) or (N,H,W)")
    h_axis, w_axis = _spatial_axes(shape, mask_np.shape[-2:], channels_last, is_torch)
    keep = ~resize_mask(mask_np.astype(bool), shape[h_axis], shape[w_axis])
    if keep.ndim == 3:
        if len(shape) != 4 or keep.shape[0] != shape[0]:
            raise ValueError(f"a batch of {keep.shape[0]} masks needs a batched image, got image shape {shape}")
        keep = keep[:, None, :, :] if w_axis == 3 else keep[:, :, :, None]
    elif w_axis == len(shape) - 2:
        keep = keep[:, :, None]
    if is_torch:
        import torch

        return image * torch.from_numpy(np.ascontiguousarray(keep)).to(device=image.device, dtype=image.dtype)
    image = np.asarray(image)
    return image * keep.astype(image.dtype)


def load_mask_folder(
    path: str | Path, h: int, w: int, invert: bool = False, threshold: int = 127
) -> dict[str, list[np.ndarray]]:
    """Read real mask images, binarise (> threshold = hole, or the reverse with invert), nearest-resize.

    Returns {"b1": [...], ..., "b6": [...], "unbucketed": [...]} keyed by the ratio measured after
    resizing; masks outside every bucket go to "unbucketed". Files are read in sorted name order.
    White = hole matches the Irregular Masks test set as used by EdgeConnect; pass invert=True for
    files with black holes.
    """
    _check_size(h, w)
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"mask folder {str(folder)!r} does not exist or is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MASK_FILE_SUFFIXES)
    if not files:
        raise ValueError(f"mask folder {str(folder)!r} holds no {'/'.join(MASK_FILE_SUFFIXES)} files")
    buckets: dict[str, list[np.ndarray]] = {name: [] for name in (*BUCKETS, UNBUCKETED)}
    for file in files:
        try:
            with Image.open(file) as img:
                gray = np.asarray(img.convert("L"))
        except OSError as err:
            raise ValueError(f"mask file {str(file)!r} is not a readable image: {err}") from None
        hole = gray <= threshold if invert else gray > threshold
        mask = np.ascontiguousarray(resize_mask(hole, h, w))
        buckets[bucket_of(float(mask.mean())) or UNBUCKETED].append(mask)
    return buckets
