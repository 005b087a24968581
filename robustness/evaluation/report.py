"""The JSON-ready report: per-condition figures with bootstrap intervals, summaries and paired differences."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from common.kinds import Task
from robustness.evaluation.accumulators import (
    CLASSIFIER_METRICS,
    SEGMENTER_METRICS,
    classification_figures,
    segmentation_figures,
)
from robustness.evaluation.bootstrap_classification import resampled_figures, supported
from robustness.evaluation.conditions import CLEAN, Condition
from robustness.evaluation.onnx_model import EvalModel
from robustness.evaluation.reference import on_reference_path
from robustness.evaluation.statistics import figure, finite_or_none
from robustness.evaluation.streaming import EvaluationCancelled, StreamResult
from robustness.evaluation.summary import Value, difference, summary_json, summary_values

HEADLINE = {Task.CLASSIFICATION: ("mAP", "CF1", "OF1", "ECE"), Task.SEGMENTATION: ("mIoU", "IA-mIoU", "IA_S")}
METRICS = {Task.CLASSIFICATION: CLASSIFIER_METRICS, Task.SEGMENTATION: SEGMENTER_METRICS}
MOST_AFFECTED = 5
CHECK_EVERY = 16  # bootstrap resamples computed between two looks at ``should_stop``


class ConditionFigures:
    """Computes one model's figures in one condition on all images and on every bootstrap resample.

    A classifier's resamples are computed all at once (``bootstrap_classification``: the same numbers); on the
    reference path (``reference.reference_path``) one resample at a time.
    """

    def __init__(self, task: str, result: StreamResult, indices: np.ndarray, thresholds: Mapping[str, float],
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.task, self.result, self.indices, self.thresholds = task, result, indices, thresholds
        self.should_stop = should_stop
        n = result.images
        self.weights = (np.array([np.bincount(row, minlength=n) for row in indices], dtype=np.float64).reshape(
            len(indices), n) if task == Task.SEGMENTATION else None)

    def compute(self, label: str, key: str) -> tuple[dict[str, Value], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """{metric: (point, (B,) samples)} and {per-class metric: ((C,) points, (B, C) samples)}."""
        stats = self.result.stats[label][key]
        if self.task == Task.CLASSIFICATION:
            def run(sample):
                return classification_figures(stats.scores, self.result.targets, self.thresholds[label], sample)
            if len(self.indices) and not on_reference_path() and supported(stats.scores, self.result.targets):
                return self._all_resamples(label, stats.scores, run(None))
            samples = [run(row) for row in self._checked(self.indices)]
        else:
            def run(sample):
                return segmentation_figures(stats, sample)
            samples = [run(w) for w in self._checked(self.weights)]
        point_metrics, point_classes = run(None)
        metrics = {name: (point_metrics[name], np.array([s[0][name] for s in samples], dtype=np.float64))
                   for name in point_metrics}
        per_class = {name: (values, np.array([s[1][name] for s in samples], dtype=np.float64).reshape(
            len(samples), len(values))) for name, values in point_classes.items()}
        return metrics, per_class

    def _all_resamples(self, label: str, scores: np.ndarray, point: tuple[dict[str, float], dict[str, np.ndarray]]
                       ) -> tuple[dict[str, Value], dict[str, tuple[np.ndarray, np.ndarray]]]:
        samples, class_samples = resampled_figures(scores, self.result.targets, self.thresholds[label], self.indices,
                                                   self._check)
        return ({name: (value, samples[name]) for name, value in point[0].items()},
                {name: (values, class_samples[name]) for name, values in point[1].items()})

    def _check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise EvaluationCancelled("cancelled while computing the bootstrap intervals")

    def _checked(self, rows: np.ndarray):
        """The rows, raising EvaluationCancelled between them once ``should_stop()`` turns true."""
        for i, row in enumerate(rows):
            if self.should_stop is not None and i % CHECK_EVERY == 0 and self.should_stop():
                raise EvaluationCancelled("cancelled while computing the bootstrap intervals")
            yield row


def _per_class_json(per_class: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {name: {cls: figure(points[c], samples[:, c]) for c, cls in enumerate(class_names)}
            for name, (points, samples) in per_class.items()}


def _most_affected(clean: tuple[np.ndarray, np.ndarray], here: tuple[np.ndarray, np.ndarray],
                   class_names: Sequence[str], metric: str) -> list[dict[str, Any]]:
    """The classes whose per-class figure drops most from the clean condition (paired bootstrap interval)."""
    drops = clean[0] - here[0]
    order = [int(c) for c in np.argsort(-np.nan_to_num(drops, nan=-np.inf), kind="stable") if np.isfinite(drops[c])]
    return [{"class": class_names[c], f"clean_{metric}": finite_or_none(clean[0][c]),
             metric: finite_or_none(here[0][c]), "drop": figure(drops[c], clean[1][:, c] - here[1][:, c])}
            for c in order[:MOST_AFFECTED]]


def build_results(task: str, result: StreamResult, conditions: Sequence[Condition], labels: Sequence[str],
                  class_names: Sequence[str], indices: np.ndarray, thresholds: Mapping[str, float],
                  should_stop: Callable[[], bool] | None = None
                  ) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Value]]]]:
    """Per model and condition: metrics, per-class figures and the most-affected classes (JSON), plus every
    metric's (point, samples) per model -> metric -> condition key, for summaries and differences. Raises
    EvaluationCancelled between bootstrap resamples once ``should_stop()`` turns true."""
    figures = ConditionFigures(task, result, indices, thresholds, should_stop)
    out: dict[str, Any] = {label: {} for label in labels}
    values: dict[str, dict[str, dict[str, Value]]] = {label: {m: {} for m in METRICS[task]} for label in labels}
    for label in labels:
        clean_classes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for condition in conditions:
            metrics, per_class = figures.compute(label, condition.key)
            if condition.kind == CLEAN:
                clean_classes = per_class
            for name, value in metrics.items():
                values[label][name][condition.key] = value
            entry: dict[str, Any] = {"metrics": {name: figure(*value) for name, value in metrics.items()},
                                     "per_class": _per_class_json(per_class, class_names)}
            if condition.kind != CLEAN:
                first = next(iter(per_class))
                entry["most_affected"] = _most_affected(clean_classes[first], per_class[first], class_names, first)
            out[label][condition.key] = entry
    return out, values


def build_summaries(task: str, values: Mapping[str, Mapping[str, Mapping[str, Value]]],
                    conditions: Sequence[Condition]) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Value]]]]:
    """Per model and headline metric: the summary JSON, and its (point, samples) values for differences."""
    raw = {label: {metric: summary_values(per_metric[metric], conditions) for metric in HEADLINE[task]}
           for label, per_metric in values.items()}
    return {label: {metric: summary_json(v) for metric, v in per_metric.items()}
            for label, per_metric in raw.items()}, raw


def build_comparisons(task: str, labels: Sequence[str], values: Mapping[str, Any], summaries: Mapping[str, Any],
                      conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    """Paired differences (other - first model) of every metric in every condition and of every summary value."""
    base = labels[0]
    comparisons = []
    for other in labels[1:]:
        cells = {c.key: {metric: figure(*difference({"d": values[base][metric][c.key]},
                                                    {"d": values[other][metric][c.key]})["d"])
                         for metric in METRICS[task]} for c in conditions}
        summary = {metric: summary_json(difference(summaries[base][metric], summaries[other][metric]),
                                        with_trend=False) for metric in HEADLINE[task]}
        comparisons.append({"model": base, "other": other, "difference": "other - model",
                            "conditions": cells, "summary": summary})
    return comparisons


def model_json(label: str, model: EvalModel) -> dict[str, Any]:
    """What the report says about one model."""
    m = model.manifest
    return {"label": label, "name": m.name, "version": m.version, "path": str(m.path) if m.path else None,
            "task": m.task, "activation": m.activation, "threshold": m.threshold, "input_size": list(m.input_size),
            "classes": len(m.class_names), "providers": list(getattr(model, "providers", [])),
            "precision": getattr(model, "precision", "fp32")}
