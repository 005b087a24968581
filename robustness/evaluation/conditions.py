"""The grid of test conditions and how one image becomes the model input under each of them.

A condition is ``clean``, one irregular occlusion mask from a hole-ratio bucket (b1..b6), or one common
corruption at one severity. Every random choice is seeded from (run seed, image index, condition key), so a
rerun, and every model of a comparison, sees the same perturbed pixels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from common.preprocess import InputNormaliser, resize_to_input
from robustness.corruptions import corrupt
from robustness.masks import BUCKETS, RATIO_ALIASES, apply_mask, masks

CLEAN, OCCLUSION, CORRUPTION = "clean", "occlusion", "corruption"


@dataclass(frozen=True)
class Condition:
    """One cell of the grid: clean, an occlusion bucket, or a corruption at a severity."""

    kind: str
    bucket: str | None = None
    corruption: str | None = None
    severity: int | None = None

    @property
    def key(self) -> str:
        """Stable identifier: ``clean``, ``occlusion/b6`` or ``corruption/fog/3``."""
        if self.kind == OCCLUSION:
            return f"{OCCLUSION}/{self.bucket}"
        if self.kind == CORRUPTION:
            return f"{CORRUPTION}/{self.corruption}/{self.severity}"
        return CLEAN

    @property
    def label(self) -> str:
        """Human-readable name for tables and plots."""
        if self.kind == OCCLUSION:
            lo, hi = BUCKETS[self.bucket]
            return f"occlusion {self.bucket} ({lo:g}, {hi:g}]"
        if self.kind == CORRUPTION:
            return f"{self.corruption} s{self.severity}"
        return CLEAN

    def to_json(self) -> dict:
        """The condition as report.json lists it."""
        out: dict = {"key": self.key, "kind": self.kind, "label": self.label}
        if self.kind == OCCLUSION:
            out |= {"bucket": self.bucket, "hole_ratio": list(BUCKETS[self.bucket])}
        if self.kind == CORRUPTION:
            out |= {"corruption": self.corruption, "severity": self.severity}
        return out


def parse_occlusion(spec: str) -> tuple[str, ...]:
    """``all`` -> b1..b6, ``high``/``low`` -> b6/b1, ``none`` -> (), else comma-separated bucket names."""
    key = spec.strip().lower()
    if key == "all":
        return tuple(BUCKETS)
    if key in ("", "none"):
        return ()
    names = []
    for part in (p.strip() for p in key.split(",") if p.strip()):
        alias = {"high": "b6", "low": "b1"}.get(part, part)
        if alias not in BUCKETS:
            allowed = ", ".join(["all", "none", "high", "low", *BUCKETS])
            hint = " (a range alias like 'medium' spans two buckets)" if part in RATIO_ALIASES else ""
            raise ValueError(f"unknown occlusion bucket {part!r}{hint}; choose from {allowed}")
        names.append(alias)
    return tuple(sorted(dict.fromkeys(names)))


def condition_grid(occlusion: tuple[str, ...], corruptions: tuple[str, ...],
                   severities: tuple[int, ...]) -> tuple[Condition, ...]:
    """Clean first, then the occlusion buckets, then every corruption at every severity."""
    return (Condition(CLEAN),
            *(Condition(OCCLUSION, bucket=b) for b in occlusion),
            *(Condition(CORRUPTION, corruption=c, severity=s) for c in corruptions for s in severities))


def derived_seed(seed: int, index: int, key: str) -> int:
    """A 32-bit seed from (run seed, image index, condition key), independent of Python's hash salt."""
    entropy = [int(seed), int(index), zlib.crc32(key.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class InputBuilder:
    """Model inputs for one input spec (size, mean, std), prepared exactly as the server prepares them."""

    def __init__(self, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.normaliser = InputNormaliser(mean, std)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """The uint8 HWC image stretched to the input size (bilinear)."""
        return np.asarray(resize_to_input(Image.fromarray(image, mode="RGB"), self.size))

    def normalise(self, resized: np.ndarray) -> np.ndarray:
        """(3, H, W) float32 input of a resized uint8 image."""
        return self.normaliser(Image.fromarray(resized, mode="RGB"))

    def hole_mask(self, bucket: str, seed: int) -> np.ndarray:
        """One (H, W) irregular hole mask at the input size from a b1..b6 bucket."""
        return masks(1, self.size[0], self.size[1], BUCKETS[bucket], seed)[0]

    def build(self, resized: np.ndarray, clean: np.ndarray, condition: Condition, seed: int,
              reference: bool = False) -> np.ndarray:
        """The (3, H, W) input of one image under one condition; ``seed`` comes from ``derived_seed``.

        Holes are zeroed after normalisation (the MSL paper); corruptions act on the resized uint8 pixels
        (``reference``: by imagecorruptions' own code everywhere, see ``corrupt``).
        """
        if condition.kind == OCCLUSION:
            return apply_mask(clean, self.hole_mask(condition.bucket, seed))
        if condition.kind == CORRUPTION:
            return self.normalise(corrupt(resized, condition.corruption, condition.severity, seed, reference))
        return clean
