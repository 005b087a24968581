"""The single pass over the evaluation set: one image at a time, every condition, every model, in batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.kinds import Task
from common.labels import VOID
from common.scores import class_map, class_scores, resize_class_map
from robustness.evaluation.accumulators import ClassificationScores, SegmentationRecords, ternary_targets
from robustness.evaluation.batching import BatchRunner
from robustness.evaluation.checks import Checks, Group, clean_reference
from robustness.evaluation.conditions import CLEAN, Condition, InputBuilder, derived_seed
from robustness.evaluation.onnx_model import EvalModel
from robustness.evaluation.prefetch import Prefetched
from robustness.evaluation.reference import on_reference_path

PREFETCH_BATCHES = 2  # model inputs perturbed ahead of the models, in batches


class EvaluationCancelled(Exception):
    """``should_stop()`` turned true between two images; nothing was written."""


@dataclass
class StreamResult:
    """Everything the report is computed from, once every image has gone through every model."""

    images: int
    names: list[str]
    targets: np.ndarray | None  # (N, C) ternary targets (classifiers)
    stats: dict[str, dict[str, ClassificationScores | SegmentationRecords]]  # label -> condition key -> statistics
    checks: Checks | None
    images_with_maps: int
    seconds: dict[str, float] = field(default_factory=dict)
    inputs_run: int = 0


def input_groups(models: Mapping[str, EvalModel]) -> list[Group]:
    """Models that share an input spec (size, mean, std) share one builder and hence the very same inputs."""
    groups: dict[tuple, list[str]] = {}
    for label, model in models.items():
        spec = model.manifest.input
        groups.setdefault((tuple(spec.size), tuple(spec.mean), tuple(spec.std)), []).append(label)
    return [(InputBuilder(size, mean, std), tuple(labels)) for (size, mean, std), labels in groups.items()]


def _consumer(task: str, models: Mapping[str, EvalModel], labels: Sequence[str], statistics: Mapping[str, Any],
              index: int, gt: tuple[np.ndarray, np.ndarray] | None,
              clean_outputs: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> Callable:
    def consume(outputs: Mapping[str, np.ndarray]) -> None:
        for label in labels:
            output = outputs[label]
            if task == Task.CLASSIFICATION:
                statistics[label].add(index, class_scores(output, models[label].manifest.activation))
            else:
                statistics[label].add(index, resize_class_map(class_map(output), gt[0].shape[::-1]), *gt)
            if clean_outputs is not None:
                shape = gt[0].shape if gt is not None else (0, 0)
                clean_outputs[label] = (clean_reference(task, models[label], output, shape), output)
    return consume


@dataclass
class ImageStart:
    """One image read and prepared: its sample and, per input group, its clean input. The inputs of each condition
    follow it, one list (per group) per condition."""

    index: int
    sample: Any
    clean: list[np.ndarray]


def prepared_inputs(eval_set: Any, groups: Sequence[Group], conditions: Sequence[Condition], seed: int, n: int,
                    seconds: dict[str, float], reference: bool = False) -> Iterator[ImageStart | list[np.ndarray]]:
    """For images 0..n-1 in order: an ImageStart, then every condition's inputs per group (conditions' order).

    Adds the time spent reading and perturbing to ``seconds``.
    """
    for index in range(n):
        start = time.perf_counter()
        sample = eval_set.read(index)
        seconds["read"] += time.perf_counter() - start
        start = time.perf_counter()
        resized = [builder.resize(sample.image) for builder, _ in groups]
        clean = [builder.normalise(r) for (builder, _), r in zip(groups, resized, strict=True)]
        seconds["perturb"] += time.perf_counter() - start
        yield ImageStart(index, sample, clean)
        for condition in conditions:
            start = time.perf_counter()
            condition_seed = derived_seed(seed, index, condition.key)
            built = [builder.build(r, x, condition, condition_seed, reference)
                     for (builder, _), r, x in zip(groups, resized, clean, strict=True)]
            seconds["perturb"] += time.perf_counter() - start
            yield built


def stream(models: Mapping[str, EvalModel], eval_set: Any, conditions: Sequence[Condition], *, seed: int,
           batch_size: int, checks: bool, limit: int | None = None,
           progress: Callable[[int, int], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> StreamResult:
    """Run every model on every image under every condition and keep the per-condition statistics.

    Images are read and perturbed in a background thread, up to ``PREFETCH_BATCHES`` batches of inputs ahead, while
    the models run; on the reference path (``reference.reference_path``) both happen in turn in this thread. Either
    way the inputs, their order and hence every statistic are the same.
    """
    task = eval_set.task
    n = len(eval_set) if limit is None else min(len(eval_set), limit)
    num_classes = len(eval_set.class_names)
    make = (lambda: ClassificationScores(n, num_classes)) if task == Task.CLASSIFICATION else (
        lambda: SegmentationRecords(num_classes))
    stats = {label: {c.key: make() for c in conditions} for label in models}
    groups = input_groups(models)
    runner = BatchRunner(models, batch_size)
    behaviour = Checks(task, models, groups, seed) if checks else None
    targets = np.zeros((n, num_classes), dtype=np.int8) if task == Task.CLASSIFICATION else None
    names: list[str] = []
    seconds = {"read": 0.0, "perturb": 0.0}
    with_maps = 0
    reference = on_reference_path()
    items = prepared_inputs(eval_set, groups, conditions, seed, n, seconds, reference)
    with Prefetched(items, 0 if reference else PREFETCH_BATCHES * batch_size) as ahead:
        for index in range(n):
            if should_stop is not None and should_stop():
                raise EvaluationCancelled(f"cancelled after {index} of {n} images")
            prepared = next(ahead)
            sample = prepared.sample
            names.append(sample.name)
            if targets is not None:
                targets[index] = ternary_targets(sample.labels, eval_set.ternary)
            gt = _ground_truth(task, sample)
            with_maps += sample.class_map is not None
            run_checks = behaviour is not None and sample.class_map is not None
            clean_outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for condition in conditions:
                for (_, labels), x in zip(groups, next(ahead), strict=True):
                    keep = clean_outputs if run_checks and condition.kind == CLEAN else None
                    consumer = _consumer(task, models, labels, {lb: stats[lb][condition.key] for lb in labels},
                                         index, gt, keep)
                    runner.add(dict.fromkeys(labels, x), consumer)  # may run a batch
            if run_checks:
                # Queued after the clean item, so clean_outputs is filled before any check output arrives.
                runner.add_all(behaviour.image_items(index, sample.name, np.asarray(sample.class_map),
                                                     sample.labels, prepared.clean, clean_outputs))
            if index == n - 1:
                runner.flush()
            if progress is not None:
                progress(index + 1, n)
    seconds["inference"] = runner.seconds
    return StreamResult(n, names, targets, stats, behaviour, with_maps, seconds, runner.inputs_run)


def _ground_truth(task: str, sample: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(class map, instance map) for segmenters; an instance map that knows only void when none is given."""
    if task != Task.SEGMENTATION:
        return None
    if sample.class_map is None:
        raise ValueError(f"image {sample.name!r} has no ground-truth class map; a segmenter cannot be evaluated")
    gt_class = np.asarray(sample.class_map)
    if sample.instance_map is None:
        return gt_class, np.where(gt_class == VOID, VOID, 0).astype(np.uint8)
    return gt_class, np.asarray(sample.instance_map)
