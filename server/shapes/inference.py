"""The answers of /predict and of /segment?format=json."""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict

from common.kinds import Activation
from server.shapes.common import ScoredLabel, Timing
from server.shapes.schema import closed


@closed
class PredictResponse(TypedDict):
    """The labels of one image: above the threshold (sigmoid) or the top classes (softmax), highest first."""

    model: str
    labels: list[ScoredLabel]
    scores: NotRequired[dict[str, float]]  # scores=true: every class's score, in class order
    threshold: float | None
    activation: Activation
    timing: Timing


@closed
class Instances(TypedDict):
    """8-connected regions of one class, counted by area: S < 32², M < 96², L otherwise."""

    count: int
    S: int
    M: int
    L: int


@closed
class SegmentClass(TypedDict):
    """One class present in the class map: its pixel area, the share of the image it covers, its regions."""

    id: int
    name: str
    pixels: int
    fraction: float
    instances: Instances


@closed
class SegmentResponse(TypedDict):
    """Per-class statistics of the class map at the image's original size ([height, width])."""

    model: str
    size: list[int]
    classes: list[SegmentClass]
    timing: Timing
