"""CheckList-style behavioural checks (Ribeiro et al. 2020) that need ground-truth class maps.

invariance (background occlusion must not matter)
    One seeded irregular mask from bucket ``INVARIANCE_BUCKET`` at the model input size, intersected with the
    ground-truth background (class map == 0, nearest-resized to the input size; void is not background), is
    applied after normalisation. Images whose intersection is empty are not tested.
    Neither check tests a model on an image where its clean answer is empty (no label at or above its threshold,
    an all-background map): that would pass without showing anything. Such cases are counted apart
    (``untested_empty_clean_prediction``).
    Classifier: passes when the set of predicted labels (score >= the manifest threshold) equals the clean
    image's set exactly. Segmenter: passes when at most ``SEGMENTER_INVARIANCE_TOLERANCE`` of the foreground
    ground-truth pixels (not background, not void; at the ground truth's resolution) change predicted class.

direction (hiding more of an object must not raise its score)
    For each class present in the image (classifier: target 1 and pixels in the class map; segmenter: any
    non-background class in the ground truth), that class's pixels at the input size are ordered along a seeded
    random direction (a sweep, so the hidden part is contiguous) and the first 0, 25, 50, 75 and 100% of them
    are masked. The watched score is the class's sigmoid score (classifier) or its mean softmax probability
    over those same pixels (segmenter). Passes when no step raises it by more than ``DIRECTION_TOLERANCE``.

Class-map ids: a segmenter's class k is id k; a classifier's class k is id k + 1 (VOC: 0 is the background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from common.kinds import Task
from common.labels import BACKGROUND, VOID
from common.scores import class_map, class_scores, resize_class_map
from robustness.evaluation.conditions import InputBuilder, derived_seed
from robustness.evaluation.onnx_model import EvalModel
from robustness.masks import apply_mask, resize_mask

INVARIANCE_BUCKET = "b3"
SEGMENTER_INVARIANCE_TOLERANCE = 0.02  # fraction of foreground ground-truth pixels allowed to change class
DIRECTION_TOLERANCE = 0.02  # largest allowed rise of the watched score between two masking steps
DIRECTION_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_FAILURES_LISTED = 10
SKIPPED = "skipped: needs ground-truth maps"

INVARIANCE_DEFINITION = {
    Task.CLASSIFICATION: "masking ground-truth background only leaves the predicted label set unchanged",
    Task.SEGMENTATION: f"masking ground-truth background only changes the predicted class of at most "
                    f"{SEGMENTER_INVARIANCE_TOLERANCE:.0%} of the foreground ground-truth pixels",
}
DIRECTION_DEFINITION = {
    Task.CLASSIFICATION: "masking 0/25/50/75/100% of a present object never raises its class score by more than "
                      "the tolerance at any step",
    Task.SEGMENTATION: "masking 0/25/50/75/100% of a present object never raises the mean probability of its class "
                    "over its pixels by more than the tolerance at any step",
}

Group = tuple[InputBuilder, tuple[str, ...]]  # one input spec and the labels of the models that share it
Item = tuple[dict[str, np.ndarray], Any]


@dataclass
class CheckTally:
    """Counts of one check for one model, and the first few failures."""

    tested: int = 0
    passed: int = 0
    empty_clean: int = 0  # cases not tested: the model predicted nothing on the clean image, so nothing can change
    failures: list[dict[str, Any]] = field(default_factory=list)

    def record(self, ok: bool, detail: dict[str, Any]) -> None:
        """Count one test case."""
        self.tested += 1
        self.passed += int(ok)
        if not ok and len(self.failures) < MAX_FAILURES_LISTED:
            self.failures.append(detail)

    def to_json(self, definition: str, tolerance: float, skipped: str | None = None) -> dict[str, Any]:
        """The check as report.json gives it."""
        return {"status": skipped or "ok", "tested": self.tested, "passed": self.passed,
                "pass_rate": self.passed / self.tested if self.tested else None,
                "untested_empty_clean_prediction": self.empty_clean,
                "tolerance": tolerance, "definition": definition, "failures": self.failures}


def sweep_order(mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a mask's pixels, sorted along a seeded random direction."""
    rows, cols = np.nonzero(mask)
    angle = np.random.default_rng(seed).uniform(0.0, 2.0 * np.pi)
    order = np.argsort(cols * np.cos(angle) + rows * np.sin(angle), kind="stable")
    return rows[order], cols[order]


def clean_reference(task: str, model: EvalModel, output: np.ndarray, gt_shape: tuple[int, int]) -> np.ndarray:
    """What the checks compare against: clean scores (classifier) or clean class map at ground-truth size."""
    if task == Task.CLASSIFICATION:
        return class_scores(output, model.manifest.activation)
    return resize_class_map(class_map(output), gt_shape[::-1])


class Checks:
    """Both checks for every model over a whole run: builds each image's check inputs and scores the outputs."""

    def __init__(self, task: str, models: Mapping[str, EvalModel], groups: Sequence[Group], seed: int) -> None:
        self.task, self.models, self.groups, self.seed = task, dict(models), list(groups), seed
        self.num_classes = len(next(iter(self.models.values())).manifest.class_names)
        self.invariance = {label: CheckTally() for label in models}
        self.direction = {label: CheckTally() for label in models}
        self.images_with_maps = 0

    def _id(self, class_index: int) -> int:
        return class_index + 1 if self.task == Task.CLASSIFICATION else class_index

    def _predicts_nothing(self, label: str, reference: np.ndarray) -> bool:
        """Whether a model's clean answer is empty (no label at or above its threshold; an all-background map), which
        would pass every check without showing anything: such cases are counted apart, not tested."""
        if self.task == Task.CLASSIFICATION:
            threshold = self.models[label].manifest.kind.threshold(self.models[label].manifest.threshold)
            return threshold is not None and not bool((reference >= threshold).any())
        return not bool((reference != BACKGROUND).any())

    def _watch(self, label: str, output: np.ndarray, cls: int, pixels: np.ndarray) -> float:
        if self.task == Task.CLASSIFICATION:
            return float(class_scores(output, self.models[label].manifest.activation)[cls])
        return float(special.softmax(output.astype(np.float64), axis=0)[cls][pixels].mean())

    def image_items(self, index: int, name: str, gt: np.ndarray, labels: np.ndarray | None,
                    clean: Sequence[np.ndarray], clean_outputs: Mapping[str, tuple[np.ndarray, np.ndarray]]
                    ) -> list[Item]:
        """The (inputs, consumer) items of one image's checks.

        ``clean[g]`` is group g's clean input. ``clean_outputs[label]`` = (``clean_reference``, raw clean output)
        must be filled before these items are consumed (queue the clean item first).
        """
        self.images_with_maps += 1
        present = self._present_classes(gt, labels)
        items: list[Item] = []
        for (builder, group), clean_input in zip(self.groups, clean, strict=True):
            gt_input = resize_mask(gt, *builder.size)
            items += self._invariance_items(index, name, group, builder, gt, gt_input, clean_input, clean_outputs)
            for cls in present:
                items += self._direction_items(index, name, group, cls, gt_input, clean_input, clean_outputs)
        return items

    def _present_classes(self, gt: np.ndarray, labels: np.ndarray | None) -> list[int]:
        ids = set(np.unique(gt).tolist()) - {VOID, BACKGROUND}
        if self.task == Task.CLASSIFICATION:
            return [int(c) for c in np.flatnonzero(np.asarray(labels) == 1) if self._id(int(c)) in ids]
        return sorted(int(c) for c in ids if c < self.num_classes)

    def _invariance_items(self, index: int, name: str, group: tuple[str, ...], builder: InputBuilder,
                          gt: np.ndarray, gt_input: np.ndarray, clean: np.ndarray,
                          clean_outputs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[Item]:
        hole = builder.hole_mask(INVARIANCE_BUCKET, derived_seed(self.seed, index, "check/invariance"))
        hole &= gt_input == BACKGROUND
        foreground = (gt != BACKGROUND) & (gt != VOID)
        if not hole.any() or (self.task == Task.SEGMENTATION and not foreground.any()):
            return []

        def consume(outputs: Mapping[str, np.ndarray]) -> None:
            for label in group:
                reference = clean_outputs[label][0]
                if self._predicts_nothing(label, reference):
                    self.invariance[label].empty_clean += 1
                    continue
                if self.task == Task.CLASSIFICATION:
                    threshold = self.models[label].manifest.threshold
                    masked = class_scores(outputs[label], self.models[label].manifest.activation)
                    names = self.models[label].manifest.class_names
                    before = {names[c] for c in np.flatnonzero(reference >= threshold)}
                    after = {names[c] for c in np.flatnonzero(masked >= threshold)}
                    self.invariance[label].record(before == after, {"image": name, "lost": sorted(before - after),
                                                                    "gained": sorted(after - before)})
                else:
                    masked_map = resize_class_map(class_map(outputs[label]), gt.shape[::-1])
                    changed = float(np.mean(masked_map[foreground] != reference[foreground]))
                    self.invariance[label].record(changed <= SEGMENTER_INVARIANCE_TOLERANCE,
                                                  {"image": name, "changed_fraction": changed})

        masked_input = apply_mask(clean, hole)
        return [(dict.fromkeys(group, masked_input), consume)]

    def _direction_items(self, index: int, name: str, group: tuple[str, ...], cls: int, gt_input: np.ndarray,
                         clean: np.ndarray, clean_outputs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[Item]:
        pixels = gt_input == self._id(cls)
        if not pixels.any():
            return []
        rows, cols = sweep_order(pixels, derived_seed(self.seed, index, f"check/direction/{cls}"))
        values: dict[str, list[float]] = {label: [] for label in group}

        def consume(outputs: Mapping[str, np.ndarray]) -> None:
            for label in group:
                seen = values[label]
                if not seen:
                    seen.append(self._watch(label, clean_outputs[label][1], cls, pixels))
                seen.append(self._watch(label, outputs[label], cls, pixels))
                if len(seen) == len(DIRECTION_FRACTIONS):
                    if self._predicts_nothing(label, clean_outputs[label][0]):
                        self.direction[label].empty_clean += 1
                        continue
                    ok = bool(np.all(np.diff(seen) <= DIRECTION_TOLERANCE))
                    class_name = self.models[label].manifest.class_names[cls]
                    self.direction[label].record(ok, {"image": name, "class": class_name,
                                                      "scores": [round(v, 6) for v in seen]})

        items: list[Item] = []
        for fraction in DIRECTION_FRACTIONS[1:]:
            hole = np.zeros_like(pixels)
            k = round(fraction * rows.size)
            hole[rows[:k], cols[:k]] = True
            items.append((dict.fromkeys(group, apply_mask(clean, hole)), consume))
        return items

    def to_json(self, skipped: bool) -> dict[str, dict[str, Any]]:
        """Per model label: both checks' counts, pass rates, tolerances and definitions."""
        reason = SKIPPED if skipped else None
        invariance_tolerance = SEGMENTER_INVARIANCE_TOLERANCE if self.task == Task.SEGMENTATION else 0.0
        return {label: {
            "invariance": self.invariance[label].to_json(INVARIANCE_DEFINITION[self.task], invariance_tolerance,
                                                         reason),
            "direction": self.direction[label].to_json(DIRECTION_DEFINITION[self.task], DIRECTION_TOLERANCE, reason),
        } for label in self.models}
