"""The answers of /robustness: one report shape per kind of model, each with the request's echo and its timing."""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

from common.kinds import Activation, Task
from server.shapes.common import ScoredLabel, Timing
from server.shapes.schema import closed


@closed
class MaskRatioAsked(TypedDict):
    """The hole-ratio range asked for, as written and as [low, high]."""

    spec: str
    range: list[float]


@closed
class Corruption(TypedDict):
    """The ImageNet-C corruption of the copies."""

    name: str
    severity: int


@closed
class HoleRatios(TypedDict):
    """The measured share of each copy's pixels under a hole."""

    mean: float
    min: float
    max: float


@closed
class Peak(TypedDict):
    """A point in model-input pixels."""

    x: int
    y: int


@closed
class Saliency(TypedDict):
    """explain=true: the RISE heatmap of one judged class, over the clean input-size image."""

    label: str
    score: float
    peak: Peak
    png_base64: str


class _Request(TypedDict):
    """The request's echo, common to every report."""

    model: str
    mask_ratio: MaskRatioAsked | None
    corruption: Corruption | None
    n: int
    seed: int
    threshold: float | None
    precision: str
    warning: str | None
    hole_ratio: HoleRatios
    saliency: NotRequired[list[Saliency]]
    timing: Timing


# ---------------------------------------------------------------- multi-label (sigmoid) classifiers


@closed
class MultiLabelClean(TypedDict):
    """The clean image's labels and every class's score."""

    labels: list[ScoredLabel]
    scores: dict[str, float]


@closed
class MultiLabelReference(TypedDict):
    """The classes judged: the true labels= when given, else the clean prediction."""

    source: Literal["labels", "clean_prediction"]
    classes: list[str]


@closed
class ScoreDrops(TypedDict):
    """Mean score drop (clean - masked) of the reference classes, overall and per class."""

    mean: float | None
    per_class: dict[str, float]


@closed
class FalsePositives(TypedDict):
    """Classes outside the reference that a mask makes positive."""

    mean_per_mask: float
    gained: dict[str, int]
    mean_score_rise_absent: float | None


@closed
class CleanCorrectness(TypedDict):
    """labels=: the clean prediction against the true classes."""

    hits: list[str]
    misses: list[str]
    false_positives: list[str]


@closed
class MultiLabelMask(TypedDict):
    """One masked copy's labels and what changed."""

    index: int
    hole_ratio: float
    labels: list[str]
    lost: list[str]
    gained: list[str]
    flips: int
    jaccard: float | None
    score_drop_present: float | None
    png_base64: NotRequired[str]  # return_masks=true


@closed
class MultiLabelRobustness(_Request):
    """A multi-label (sigmoid) classifier's report."""

    task: Literal[Task.CLASSIFICATION]
    activation: Literal[Activation.SIGMOID]
    clean: MultiLabelClean
    reference: MultiLabelReference
    retention: dict[str, float] | None
    mean_retention: float | None
    score_drop_present: ScoreDrops
    false_positives: FalsePositives
    jaccard: float | None
    flips: int
    clean_correctness: NotRequired[CleanCorrectness]
    masks: list[MultiLabelMask]


# ---------------------------------------------------------------- single-label (softmax) classifiers


@closed
class SingleLabelClean(TypedDict):
    """The clean image's top-1 and its most probable classes."""

    top1: ScoredLabel
    labels: list[ScoredLabel]


# "class" is a Python keyword: the functional form names the key.
SingleLabelReference = closed(TypedDict("SingleLabelReference", {
    "source": Literal["labels", "clean_prediction"], "class": str, "score": float}))
SingleLabelReference.__doc__ = "The class judged (the one labels= class, else the clean top-1) and its clean score."


@closed
class TrueClassDrops(TypedDict):
    """The reference class's probability drop (clean - masked), mean and per mask."""

    mean: float
    per_mask: list[float]


@closed
class TopOneCorrectness(TypedDict):
    """labels=: whether the clean top-1 is the true class, and the true class's rank."""

    correct: bool
    true_class_rank: int


@closed
class SingleLabelMask(TypedDict):
    """One masked copy's top-1 and the reference class's probability."""

    index: int
    hole_ratio: float
    top1: ScoredLabel
    true_class_score: float
    true_class_score_drop: float
    png_base64: NotRequired[str]  # return_masks=true


@closed
class SingleLabelRobustness(_Request):
    """A single-label (softmax) classifier's report."""

    task: Literal[Task.CLASSIFICATION]
    activation: Literal[Activation.SOFTMAX]
    clean: SingleLabelClean
    reference: SingleLabelReference
    top1_retention: float
    true_class_score_drop: TrueClassDrops
    top1_changes: int
    clean_correctness: NotRequired[TopOneCorrectness]
    masks: list[SingleLabelMask]


# ---------------------------------------------------------------- segmenters


@closed
class CleanClass(TypedDict):
    """A class of the clean map and the share of the map it covers."""

    id: int
    name: str
    fraction: float


@closed
class SegmenterClean(TypedDict):
    """The classes of the clean map."""

    classes: list[CleanClass]


@closed
class Region(TypedDict):
    """Agreement with the clean map over the pixels inside (or outside) the holes."""

    miou_foreground: float | None
    pixel_agreement: float | None


@closed
class TruthScores(TypedDict):
    """A map (clean, or the mean over masked ones) against the ground truth."""

    pixel_accuracy: float | None
    miou: float | None
    per_class_iou: dict[str, float | None]


@closed
class TruthFigures(TypedDict):
    """A truth PNG was sent: the clean and the masked maps against it."""

    void_fraction: float
    clean: TruthScores
    masked: TruthScores
    miou_drop: float | None


@closed
class MaskTruth(TypedDict):
    """One masked map against the ground truth."""

    pixel_accuracy: float | None
    miou: float | None


@closed
class SegmenterMask(TypedDict):
    """One masked map against the clean one."""

    index: int
    hole_ratio: float
    miou_foreground: float | None
    miou_foreground_inside: float | None
    miou_foreground_outside: float | None
    changed_pixels: int
    truth: NotRequired[MaskTruth]
    png_base64: NotRequired[str]  # return_masks=true


@closed
class SegmenterRobustness(_Request):
    """A segmenter's report."""

    task: Literal[Task.SEGMENTATION]
    activation: Literal[Activation.SOFTMAX]
    clean: SegmenterClean
    per_class_iou: dict[str, float | None]
    miou_foreground: float | None
    inside_holes: Region
    outside_holes: Region
    truth: NotRequired[TruthFigures]
    masks: list[SegmenterMask]


RobustnessResponse = MultiLabelRobustness | SingleLabelRobustness | SegmenterRobustness
