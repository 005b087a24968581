"""The vocabulary of what a model answers: its task, its output activation, and the kind they make together.

``Task`` and ``Activation`` are string enums, so they compare equal to the words that manifests, presets and query
strings spell, and they serialise as those words. ``ModelKind`` owns the rules that follow from the pair: the
activation, whether a threshold decides labels, and the output's shape.
"""

from __future__ import annotations

import enum


class Task(enum.StrEnum):
    """What a model's output describes: the image's classes, or every pixel's."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"


class Activation(enum.StrEnum):
    """How logits become scores: per class independently, or normalised over classes."""

    SIGMOID = "sigmoid"  # multi-label
    SOFTMAX = "softmax"  # single-label, or per pixel


TASKS = tuple(t.value for t in Task)  # "classification", "segmentation"
ACTIVATIONS = tuple(a.value for a in Activation)  # "sigmoid", "softmax"


class ModelKind(enum.Enum):
    """What a model answers, which decides how its logits are read: its task, its activation, its output's
    shape and whether a threshold decides its labels."""

    MULTI_LABEL = "multi-label classifier"  # sigmoid per class; labels are the classes at or above a threshold
    SINGLE_LABEL = "single-label classifier"  # softmax over classes; labels are the top classes
    SEGMENTER = "segmenter"  # softmax per pixel; the class map is the arg-max

    @classmethod
    def of(cls, task: str, activation: str) -> ModelKind:
        """The kind of a model with this task and output activation."""
        if task == Task.SEGMENTATION:
            return cls.SEGMENTER
        return cls.MULTI_LABEL if activation == Activation.SIGMOID else cls.SINGLE_LABEL

    @property
    def task(self) -> Task:
        """The manifest's task word for this kind."""
        return Task.SEGMENTATION if self is ModelKind.SEGMENTER else Task.CLASSIFICATION

    @property
    def thresholded(self) -> bool:
        """Whether a score threshold decides this kind's labels (multi-label only)."""
        return self is ModelKind.MULTI_LABEL

    def threshold(self, default: float, requested: float | None = None) -> float | None:
        """The decision threshold: a multi-label model's requested one, else its manifest's; None for the others
        (a single-label answer is its top classes, a segmenter's its arg-max map)."""
        if not self.thresholded:
            return None
        return default if requested is None else requested

    def output_shape(self, classes: int, spatial: list[int]) -> list[int]:
        """The output tensor's shape, -1 for the batch: (N, C) for classifiers, (N, C, H, W) for segmenters."""
        return [-1, classes, *spatial] if self is ModelKind.SEGMENTER else [-1, classes]


def default_activation(task: str) -> Activation:
    """The activation a task implies when none is written: sigmoid for classifiers, softmax for segmenters."""
    return Activation.SIGMOID if task == Task.CLASSIFICATION else Activation.SOFTMAX
