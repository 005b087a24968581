"""One procedural scene: textured shapes on a cluttered background, with class and instance maps.

Colour never gives the class away: every class draws its colours and textures from the same
distributions. Objects are vivid; clutter is muted corner-free blobs and straight lines (a share of
the lines vivid, and clutter may carry the same textures), so an object is told from clutter by
colour and shape together.

Painting order: background (gradient, smooth noise, clutter behind), objects one over the other
(later ones occlude earlier ones), then clutter in front (thin lines and blobs that cut objects and
count as background), then pixel noise. An object whose visible area ends below ``min_visible``
pixels is not present: its left-over pixels become void (255) and it adds nothing to the target.
A band of ``void_width`` background pixels around every object is void, as in VOC.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from common.compute import available_cores
from common.kinds import Task
from common.labels import (
    EIGHT_CONNECTED,
    EMBEDDED_CLASSES,
    MEDIUM_AREA,
    SIZE_BUCKETS,
    SMALL_AREA,
    VOID,
    size_bucket,
)
from training.datasets.shapes import FILL_RATIOS, place_layers, rasterize, shape_layers

BUCKET_NAMES = dict(zip(SIZE_BUCKETS, ("small", "medium", "large"), strict=True))  # the dataset card's words
MIN_OBJECT_AREA = 40  # smallest drawn object, in pixels, before occlusion
MAX_OBJECT_FRACTION = 0.45  # a large object covers at most this share of the image
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient", "noise")
MIN_SCENES_PER_PROCESS = 64  # fewer per process: rendering them here is quicker than starting one more


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the scene generator (see ``SCENE_CONFIGS`` for the two documented benchmarks)."""

    image_size: int = 224
    max_objects: int = 6
    bucket_probs: tuple[float, float, float] = (0.5, 0.3, 0.2)  # small, medium, large, before occlusion
    min_visible: int = 12
    min_objects: int = 1
    # The label rule: a class is a positive label of the image only when one of its instances shows at least
    # label_min_pixels pixels and label_min_fraction of its drawn area. Instances that exist (>= min_visible)
    # but fail it make the class "difficult" (VOC's 0: ignored by evaluation) unless another instance passes.
    label_min_pixels: int = 0
    label_min_fraction: float = 0.0
    void_width: int = 1
    clutter_behind: tuple[int, int] = (4, 10)
    clutter_front: tuple[int, int] = (1, 5)
    noise_sigma: tuple[float, float] = (3.0, 10.0)


@dataclass
class SceneObject:
    """One drawn object: its class index (0-based over EMBEDDED_CLASSES) and areas in pixels."""

    class_index: int
    drawn_area: int
    visible_area: int = 0
    instance_id: int = 0  # 1..K once kept, 0 when dropped as not visible

    @property
    def size_bucket(self) -> str:
        """COCO bucket of the visible area."""
        return area_bucket(self.visible_area)


@dataclass
class Scene:
    """A rendered scene: RGB image, class map (0 bg, c+1, 255 void), instance map (0 bg, 1..K, 255 void)."""

    image: np.ndarray
    class_map: np.ndarray
    instance_map: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)

    @property
    def target(self) -> list[int]:
        """Multi-label target over EMBEDDED_CLASSES: 1 when at least one visible instance exists."""
        present = {o.class_index for o in self.objects if o.instance_id > 0}
        return [int(c in present) for c in range(len(EMBEDDED_CLASSES))]

    def labels(self, config: SceneConfig) -> list[int]:
        """Ternary VOC-style target under the config's label rule: 1 recognisable, 0 difficult only, -1 absent."""
        if not (config.label_min_pixels or config.label_min_fraction):
            return [1 if t else -1 for t in self.target]
        out = [-1] * len(EMBEDDED_CLASSES)
        for o in self.objects:
            if o.instance_id == 0:
                continue
            clear = o.visible_area >= config.label_min_pixels and \
                o.visible_area >= config.label_min_fraction * o.drawn_area
            out[o.class_index] = max(out[o.class_index], 1 if clear else 0)
        return out


def area_bucket(area: float) -> str:
    """COCO size bucket of a pixel area, in the dataset card's words (small, medium, large)."""
    return BUCKET_NAMES[size_bucket(area)]


def area_ranges(image_size: int) -> dict[str, tuple[float, float]]:
    """Drawn-area range of each size bucket (S, M, L) that fits in an image of this size (empty ones left out)."""
    cap = MAX_OBJECT_FRACTION * image_size**2
    ranges = {"S": (MIN_OBJECT_AREA, SMALL_AREA), "M": (SMALL_AREA, MEDIUM_AREA), "L": (MEDIUM_AREA, 4 * MEDIUM_AREA)}
    return {name: (low, min(high, cap)) for name, (low, high) in ranges.items() if min(high, cap) > 1.2 * low}


def random_colour(rng: np.random.Generator, saturated: bool) -> np.ndarray:
    """An RGB colour in [0, 255]: vivid for objects, muted (greys, browns, pastels) for clutter."""
    hue = rng.uniform()
    if saturated:
        sat, val = rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)
    else:
        sat, val = rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.85)
    return 255 * np.array(colorsys.hsv_to_rgb(hue, sat, val))


def texture_mix(rng: np.random.Generator, height: int, width: int,
                saturated: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Two random colours and the (H, W) share of the second at each pixel (None: the first colour only)."""
    first, second = random_colour(rng, saturated), random_colour(rng, saturated)
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    angle = rng.uniform(0, np.pi)
    # Row and column vectors broadcast to the same per-pixel values a full (H, W) grid gives.
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    if kind == "solid":
        return first, second, None
    if kind == "stripes":
        along = xs * np.cos(angle) + ys * np.sin(angle)
        mix = (np.sin(2 * np.pi * along / rng.uniform(3, 10)) > 0).astype(np.float32)
    elif kind == "checker":
        cell = rng.integers(2, 8)
        mix = ((xs // cell + ys // cell) % 2).astype(np.float32)
    elif kind == "dots":
        mix = (rng.uniform(size=(height, width)) < rng.uniform(0.1, 0.35)).astype(np.float32)
    elif kind == "gradient":
        along = xs * np.cos(angle) + ys * np.sin(angle)
        span = max(float(np.ptp(along)), 1.0)
        mix = (along - along.min()) / span
    else:  # noise
        mix = np.clip(rng.normal(0.5, 0.25, size=(height, width)), 0, 1).astype(np.float32)
    return first, second, mix


def blend(first: np.ndarray, second: np.ndarray, mix: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``first + mix * (second - first)`` per pixel, as (..., 3) floats of ``shape`` (``mix`` None: all ``first``)."""
    if mix is None:
        return np.broadcast_to(first, (*shape, 3))
    return first + mix[..., None] * (second - first)


def texture(rng: np.random.Generator, height: int, width: int, saturated: bool = True) -> np.ndarray:
    """A (H, W, 3) float texture of a random kind between two random colours."""
    return blend(*texture_mix(rng, height, width, saturated), (height, width))


def paint_textured(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, saturated: bool) -> bool:
    """Fill ``mask`` on ``canvas`` (in place) with a random texture; False when the mask is empty."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return False
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = mask[top:bottom, left:right]
    first, second, mix = texture_mix(rng, bottom - top, right - left, saturated)
    # Blending only the painted pixels gives each of them the value the whole texture would.
    painted = None if mix is None else np.broadcast_to(mix, box.shape)[box]
    canvas[top:bottom, left:right][box] = blend(first, second, painted, (int(box.sum()),))
    return True


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (S, S, 3) float background: a muted two-colour gradient plus smooth low-frequency variation."""
    base = texture(rng, size, size, saturated=False) if rng.uniform() < 0.3 else None
    if base is None:
        first, second = random_colour(rng, False), random_colour(rng, False)
        xs = np.arange(size, dtype=np.float32)[None, :] / max(size - 1, 1)
        ys = np.arange(size, dtype=np.float32)[:, None] / max(size - 1, 1)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.clip(0.5 + (xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle), 0, 1)
        base = first + ramp[..., None] * (second - first)
    grid = rng.uniform(-40, 40, size=(int(rng.integers(3, 9)),) * 2 + (3,)).astype(np.float32)
    channels = [Image.fromarray(np.ascontiguousarray(grid[..., c])) for c in range(3)]
    smooth = np.stack([np.array(c.resize((size, size), Image.Resampling.BILINEAR)) for c in channels], axis=-1)
    return base + smooth


def blob_polygon(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A smooth, corner-free closed blob (a potato, not one of the ten shapes) as a polygon."""
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    wobble = sum(rng.uniform(0.1, 0.3) * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3))
    points = (1 + wobble)[:, None] * np.stack([np.cos(angles), rng.uniform(0.4, 1.0) * np.sin(angles)], axis=1)
    turn = rng.uniform(0, np.pi)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return center + radius * points @ rotation.T


def clutter_mask(rng: np.random.Generator, size: int, front: bool) -> tuple[np.ndarray, bool]:
    """Mask of one clutter item, and whether it is a line: a straight line or a smooth blob."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    is_line = bool(rng.uniform() < 0.5)
    if is_line:
        points = [tuple(float(v) for v in rng.uniform(-0.1, 1.1, size=2) * size) for _ in range(2)]
        draw.line(points, fill=1, width=int(rng.integers(1, 4 if front else 7)))
    else:
        radius = rng.uniform(2, 10) if front else rng.uniform(4, size / 5)
        polygon = blob_polygon(rng, rng.uniform(0, size, size=2), radius)
        draw.polygon([(float(x), float(y)) for x, y in polygon], fill=1)
    return np.array(canvas, dtype=bool), is_line


def paint_clutter(rng: np.random.Generator, canvas: np.ndarray, count_range: tuple[int, int],
                  front: bool) -> np.ndarray:
    """Paint clutter items onto ``canvas`` in place (muted; lines sometimes vivid); return their union."""
    size = canvas.shape[0]
    union = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(count_range[0], count_range[1] + 1))):
        mask, is_line = clutter_mask(rng, size, front)
        paint_textured(rng, canvas, mask, saturated=is_line and rng.uniform() < 0.3)
        union |= mask
    return union


def sample_object_layers(rng: np.random.Generator, class_name: str, config: SceneConfig):
    """Random placement of one object of ``class_name`` with a drawn area from a random COCO bucket."""
    ranges = area_ranges(config.image_size)
    names = [n for n in SIZE_BUCKETS if n in ranges]
    probs = np.array([config.bucket_probs[SIZE_BUCKETS.index(n)] for n in names])
    low, high = ranges[names[rng.choice(len(names), p=probs / probs.sum())]]
    area = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    side = np.sqrt(area / FILL_RATIOS[class_name])
    aspect = np.exp(rng.uniform(-0.2, 0.2))
    half = (side / 2 * aspect, side / 2 / aspect)
    center = tuple(rng.uniform(0, config.image_size, size=2))
    return place_layers(shape_layers(class_name, rng), center, half, rng.uniform(0, 2 * np.pi))


def keep_visible_instances(instances: np.ndarray, objects: list[SceneObject], min_visible: int) -> np.ndarray:
    """Renumber instances with at least ``min_visible`` pixels to 1..K (painting order); others -> void."""
    counts = np.bincount(instances.ravel(), minlength=len(objects) + 1)
    lookup = np.zeros(len(objects) + 1, dtype=np.uint8)
    next_id = 1
    for index, obj in enumerate(objects, start=1):
        obj.visible_area = int(counts[index])
        if obj.visible_area >= min_visible:
            obj.instance_id = next_id
            lookup[index] = next_id
            next_id += 1
        else:
            obj.instance_id = 0
            lookup[index] = VOID
    return lookup[instances]


def class_map_from_instances(instance_map: np.ndarray, objects: list[SceneObject], void_width: int) -> np.ndarray:
    """Class map (0 bg, 1..10, 255 void) from the kept instances, with a void band around objects."""
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[VOID] = VOID
    for obj in objects:
        if obj.instance_id:
            lookup[obj.instance_id] = obj.class_index + 1
    class_map = lookup[instance_map]
    if void_width > 0:
        near = ndimage.binary_dilation(class_map > 0, structure=EIGHT_CONNECTED, iterations=void_width)
        class_map[near & (class_map == 0)] = VOID
    return class_map


def rendering_processes(scenes: int) -> int:
    """How many processes render ``scenes`` scenes: every core, but one per ``MIN_SCENES_PER_PROCESS`` at least."""
    return max(1, min(available_cores(), scenes // MIN_SCENES_PER_PROCESS))


def render_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> Scene:
    """Draw one scene from ``rng``; the same generator state always gives the same scene."""
    size = config.image_size
    canvas = background(rng, size)
    paint_clutter(rng, canvas, config.clutter_behind, front=False)
    instances = np.zeros((size, size), dtype=np.int64)
    objects: list[SceneObject] = []
    for _ in range(int(rng.integers(config.min_objects, config.max_objects + 1))):
        class_index = int(rng.integers(len(EMBEDDED_CLASSES)))
        mask = rasterize(sample_object_layers(rng, EMBEDDED_CLASSES[class_index], config), size, size)
        if not paint_textured(rng, canvas, mask, saturated=True):
            continue
        objects.append(SceneObject(class_index, int(mask.sum())))
        instances[mask] = len(objects)
    front = paint_clutter(rng, canvas, config.clutter_front, front=True)
    instances[front] = 0
    instance_map = keep_visible_instances(instances, objects, config.min_visible)
    class_map = class_map_from_instances(instance_map, objects, config.void_width)
    instance_map[class_map == VOID] = VOID
    canvas += rng.normal(0, rng.uniform(*config.noise_sigma), size=canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Scene(image, class_map, instance_map, objects)


SCENE_CONFIGS: dict[str, SceneConfig] = {
    # In the spirit of VOC2007: 1-4 mostly medium and large objects; a label needs 400 visible pixels (of 224^2)
    # and 40% of the object's drawn area, else the class is "difficult" and evaluation ignores it.
    Task.CLASSIFICATION: SceneConfig(max_objects=4, bucket_probs=(0.1, 0.5, 0.4), label_min_pixels=400,
                                  label_min_fraction=0.4),
    # In the spirit of COCO: 3-10 objects, most of them small, so that size-balancing has something to fix.
    Task.SEGMENTATION: SceneConfig(min_objects=3, max_objects=10, bucket_probs=(0.65, 0.25, 0.1)),
    # The scenes of the first embedded dataset (kept for comparison): up to 6 objects, half of them small.
    "mixed": SceneConfig(),
}
