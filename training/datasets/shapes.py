"""The ten object shapes of the embedded dataset, as polygons in unit coordinates, and their rasteriser.

Each shape is a list of ``(polygon, fill)`` layers drawn in order (fill 1 adds, fill 0 cuts a hole),
with vertices in [-1, 1]^2. A random generator varies the proportions within a class (star depth,
ring thickness, moon phase...), so a class is a family of shapes rather than one template.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from common.labels import EMBEDDED_CLASSES

Layers = list[tuple[np.ndarray, int]]


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _circle(rng: np.random.Generator) -> Layers:
    return [(_regular(48), 1)]


def _square(rng: np.random.Generator) -> Layers:
    return [(_regular(4, np.sqrt(2) * 0.92, np.pi / 4), 1)]


def _triangle(rng: np.random.Generator) -> Layers:
    return [(_regular(3, 1.0, -np.pi / 2) + np.array([0.0, 0.2]), 1)]


def _star(rng: np.random.Generator) -> Layers:
    inner = rng.uniform(0.38, 0.52)
    radii = np.tile([1.0, inner], 5)
    angles = -np.pi / 2 + np.pi * np.arange(10) / 5
    return [(radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1), 1)]


def _cross(rng: np.random.Generator) -> Layers:
    a = rng.uniform(0.22, 0.36)  # half arm width
    points = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
              (-1, -a), (-a, -a)]
    return [(np.array(points, dtype=float), 1)]


def _ring(rng: np.random.Generator) -> Layers:
    return [(_regular(48), 1), (_regular(48, rng.uniform(0.45, 0.65)), 0)]


def _hexagon(rng: np.random.Generator) -> Layers:
    return [(_regular(6), 1)]


def _arrow(rng: np.random.Generator) -> Layers:
    shaft = rng.uniform(0.18, 0.3)  # half shaft width
    neck = rng.uniform(0.05, 0.35)  # where the head starts along x
    points = [(-1, -shaft), (neck, -shaft), (neck, -0.75), (1, 0), (neck, 0.75), (neck, shaft), (-1, shaft)]
    return [(np.array(points, dtype=float), 1)]


def _heart(rng: np.random.Generator) -> Layers:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x / 17, (y + 2.5) / 15], axis=1), 1)]


def _moon(rng: np.random.Generator) -> Layers:
    offset = rng.uniform(0.35, 0.6)
    return [(_regular(48), 1), (_regular(48, rng.uniform(0.8, 0.95)) + np.array([offset, -0.1]), 0)]


SHAPE_BUILDERS = {
    "circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "cross": _cross,
    "ring": _ring, "hexagon": _hexagon, "arrow": _arrow, "heart": _heart, "moon": _moon,
}
assert tuple(SHAPE_BUILDERS) == EMBEDDED_CLASSES


def shape_layers(class_name: str, rng: np.random.Generator) -> Layers:
    """Polygons of one random instance of ``class_name`` in unit coordinates."""
    if class_name not in SHAPE_BUILDERS:
        raise ValueError(f"unknown shape class {class_name!r}; expected one of {', '.join(SHAPE_BUILDERS)}")
    return SHAPE_BUILDERS[class_name](rng)


def place_layers(layers: Layers, center: tuple[float, float], half_size: tuple[float, float],
                 angle: float) -> Layers:
    """Scale unit polygons by ``half_size`` (x, y), rotate by ``angle`` radians and move to ``center``."""
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale, shift = np.asarray(half_size, dtype=float), np.asarray(center, dtype=float)
    return [((polygon * scale) @ rotation.T + shift, fill) for polygon, fill in layers]


def rasterize(layers: Layers, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of placed polygons, drawn without anti-aliasing (deterministic)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon, fill in layers:
        draw.polygon([(float(x), float(y)) for x, y in polygon], fill=fill)
    return np.array(canvas, dtype=bool)


def fill_ratio(class_name: str, samples: int = 8, size: int = 128) -> float:
    """Mean fraction of its bounding square an axis-aligned ``class_name`` covers (for size targeting)."""
    rng = np.random.default_rng(0)
    half = size / 2
    ratios = []
    for _ in range(samples):
        layers = place_layers(shape_layers(class_name, rng), (half, half), (half, half), 0.0)
        ratios.append(rasterize(layers, size, size).mean())
    return float(np.mean(ratios))


FILL_RATIOS: dict[str, float] = {name: fill_ratio(name) for name in EMBEDDED_CLASSES}
