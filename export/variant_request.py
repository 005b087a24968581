"""What a lower-precision export asks for, checked before torch is imported (so a bad flag fails in a second)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.guard import DEFAULT_GUARD_IMAGES, DEFAULT_SPEED_SECONDS, DEFAULT_TOLERANCE
from export.variants import (
    CALIBRATION_CHOICES,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_INT8_RECIPE,
    INT8_RECIPES,
    parse_variants,
)
from robustness.probe_check import DEFAULT_PROBE_IMAGES

MAX_SPEED_SECONDS = 60.0


@dataclass(frozen=True)
class VariantRequest:
    """Which lower-precision variants to build, what calibrates INT8 and what judges every variant."""

    precisions: tuple[str, ...]
    calib: Path | None = None  # a dataset (its train split) or a folder of images
    guard_data: Path | None = None  # a labelled dataset whose TEST split judges the variants (default: calib)
    tolerance: float = DEFAULT_TOLERANCE
    calib_images: int = DEFAULT_CALIBRATION_IMAGES
    calib_method: str = "auto"
    guard_images: int | None = DEFAULT_GUARD_IMAGES
    gate_masked: bool = False  # the masked (b6) deltas reject too, not only the clean ones
    int8_recipe: str = DEFAULT_INT8_RECIPE  # how INT8 stores its weights (export.variants.INT8_RECIPES)
    probe_images: int = DEFAULT_PROBE_IMAGES  # guard images kept with their fp32 outputs, to re-check elsewhere
    speed_seconds: float = DEFAULT_SPEED_SECONDS  # each timed window of the guard's images/s against fp32

    def __post_init__(self) -> None:
        object.__setattr__(self, "precisions", parse_variants(self.precisions))
        if self.int8_recipe not in INT8_RECIPES:
            raise ValueError(f"INT8 recipe {self.int8_recipe!r} must be one of {', '.join(INT8_RECIPES)}")
        if self.probe_images < 0:
            raise ValueError("--probe-images must be >= 0")
        if not 0 < self.speed_seconds <= MAX_SPEED_SECONDS:  # NaN fails too; inf would time for ever
            raise ValueError(f"--speed-seconds must lie in (0, {MAX_SPEED_SECONDS:g}]")
        if self.calib_method not in CALIBRATION_CHOICES:
            raise ValueError(f"calibration method {self.calib_method!r} must be one of "
                             f"{', '.join(CALIBRATION_CHOICES)}")
        if self.calib_images < 1 or (self.guard_images is not None and self.guard_images < 1):
            raise ValueError("--calib-images and --guard-images must be >= 1")
        if "int8" in self.precisions and self.calib is None:
            raise ValueError("the int8 variant needs --calib DIR: a dataset (its train split is used) or a folder of "
                             "100-500 images like the ones the model will serve")
        for flag, path in (("--calib", self.calib), ("--guard-data", self.guard_data)):
            if path is not None and not Path(path).exists():
                raise ValueError(f"{flag} {path}: not found")
        if self.guard_data is None and self.calib is None:
            raise ValueError("variants need --guard-data DIR: a labelled dataset whose test split judges them")
