"""Dataset-level robustness evaluation of exported models: clean, occluded and corrupted test sets.

The CLI (``python -m robustness evaluate``) and the server's background jobs call the same two functions:
``evaluate`` streams the test set through one or more models (``EvalModel``) under a grid of conditions and
returns a JSON-ready report; ``write_outputs`` writes report.json, report.md and the plots. All figures are
in percent, each with a bootstrap 95% percentile interval; see ``statistics`` for the resampling and ECE.

The report (a figure is ``{"value": float | None, "ci": [low, high]}``; ``label`` = a model's unique name):

- ``schema``, ``kind``, ``task``, ``created``, ``config`` (the EvaluationConfig, ci_level, ece_bins);
- ``dataset``: source, root, images, images_with_class_maps, class_names, ternary, class_names_match_model;
- ``models``: [{label, name, version, path, task, activation, threshold, input_size, classes, providers}];
- ``metrics``: names, headline, unit, lower_is_better; ``conditions``: [{key, kind, label, bucket | corruption,
  severity}];
- ``results``: {label: {condition key: {metrics: {name: figure}, per_class: {AP | IoU | IA-IoU: {class: figure}},
  most_affected: [{class, clean_<m>, <m>, drop: figure}] (not for clean)}}};
- ``summary``: {label: {headline metric: {P, mPC, rPC, mPO, rPO: figure | None, per_severity, per_corruption,
  per_bucket: {name: figure}, falls_monotonically: bool | None}}};
- ``comparisons``: [{model, other, difference: "other - model", conditions: {key: {metric: figure}},
  summary: {metric: {...as summary, without the trend}}}] (empty for one model);
- ``checks``: {label: {invariance | direction: {status, tested, passed, pass_rate,
  untested_empty_clean_prediction, tolerance, definition, failures}}} or {label: "disabled"};
- ``explanations``: [{image, index, model, label, score, peak, png_base64}] (``--explain``);
- ``timings``: total_s, stream_s, figures_s, explain_s, read_s, perturb_s, inference_s, model_inputs, images_per_s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.kinds import Activation, Task
from robustness.corruptions import CORRUPTIONS, MIN_SIDE, SEVERITIES, parse_corruptions, parse_severities
from robustness.evaluation.accumulators import CLASSIFIER_METRICS, SEGMENTER_METRICS
from robustness.evaluation.conditions import condition_grid, parse_occlusion
from robustness.evaluation.onnx_model import EvalModel, OnnxModel, open_model
from robustness.evaluation.report import (
    HEADLINE,
    build_comparisons,
    build_results,
    build_summaries,
    model_json,
)
from robustness.evaluation.statistics import CI_LEVEL, ECE_BINS, bootstrap_indices
from robustness.evaluation.streaming import EvaluationCancelled, stream
from robustness.masks import BUCKETS

__all__ = ["EvalModel", "EvaluationCancelled", "EvaluationConfig", "EvaluationError", "OnnxModel", "check_compatible",
           "evaluate", "open_model", "write_outputs"]

SCHEMA = 1


class EvaluationError(ValueError):
    """Models, data and settings that cannot be evaluated together (the message says why)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate: occlusion buckets (b1..b6), corruptions and severities, seeds, batching, bootstrap.

    ``explain`` (extra): RISE saliency overlays for the first ``explain`` images.
    """

    occlusion: tuple[str, ...]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    seed: int = 0
    batch_size: int = 32
    bootstrap: int = 1000
    limit: int | None = None
    checks: bool = True
    explain: int = 0

    @classmethod
    def parse(cls, occlusion: str = "all", corruptions: str = "all", severities: str = "1-5",
              **kwargs: Any) -> EvaluationConfig:
        """A config from the CLI's spellings (``all|high|b1,b3|none``, ``all|NAME,...|none``, ``1-5``)."""
        return cls(parse_occlusion(occlusion), parse_corruptions(corruptions), parse_severities(severities), **kwargs)

    def validate(self) -> None:
        """Raise EvaluationError naming the first setting that is out of range."""
        unknown = [b for b in self.occlusion if b not in BUCKETS]
        if unknown:
            raise EvaluationError(f"unknown occlusion bucket {', '.join(unknown)}; choose from {', '.join(BUCKETS)}")
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise EvaluationError(f"unknown corruption {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
        if self.corruptions and (not self.severities or any(s not in SEVERITIES for s in self.severities)):
            raise EvaluationError(f"severities {self.severities} must be a non-empty subset of {SEVERITIES}")
        for name, value, low in (("batch size", self.batch_size, 1), ("bootstrap", self.bootstrap, 0),
                                 ("seed", self.seed, 0), ("explain", self.explain, 0)):
            if value < low:
                raise EvaluationError(f"{name} must be >= {low}, got {value}")
        if self.limit is not None and self.limit < 1:
            raise EvaluationError(f"limit must be >= 1, got {self.limit}")


def model_labels(models: Sequence[EvalModel]) -> list[str]:
    """Unique labels for the report: the model name, then name@version, then a #k suffix."""
    labels: list[str] = []
    for model in models:
        for candidate in (model.name, f"{model.name}@{model.manifest.version}"):
            if candidate not in labels:
                labels.append(candidate)
                break
        else:
            k = 2
            while f"{model.name}#{k}" in labels:
                k += 1
            labels.append(f"{model.name}#{k}")
    return labels


def check_compatible(models: Sequence[EvalModel], eval_set: Any, config: EvaluationConfig) -> None:
    """Raise EvaluationError when the models cannot be evaluated on this set (task, classes, activation, size)."""
    if not models:
        raise EvaluationError("no model to evaluate")
    first = models[0].manifest
    for model in models:
        m = model.manifest
        if m.task != eval_set.task:
            raise EvaluationError(f"model {m.name!r} is a {m.task} model but the data is a {eval_set.task} set")
        if m.task == Task.CLASSIFICATION and m.activation != Activation.SIGMOID:
            raise EvaluationError(f"model {m.name!r} is a single-label ({m.activation}) classifier; the evaluation "
                                  "measures multi-label (sigmoid) classifiers")
        if len(m.class_names) != len(eval_set.class_names):
            raise EvaluationError(f"model {m.name!r} has {len(m.class_names)} classes but the data has "
                                  f"{len(eval_set.class_names)}")
        if m.class_names != first.class_names:
            raise EvaluationError(f"model {m.name!r} has different classes from {first.name!r}; a comparison needs "
                                  "the same classes in the same order")
        if config.corruptions and min(m.input_size) < MIN_SIDE:
            raise EvaluationError(f"model {m.name!r} takes {m.input_size[0]}x{m.input_size[1]} inputs; corruptions "
                                  f"need both sides >= {MIN_SIDE}")
    if len(eval_set) == 0:
        raise EvaluationError("the evaluation set has no images")


def evaluate(models: Sequence[EvalModel], eval_set: Any, config: EvaluationConfig,
             progress: Callable[[int, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             on_phase: Callable[[str], None] | None = None) -> dict:
    """Evaluate the models on the set under the config's grid; the JSON-ready report (see ``write_outputs``).

    ``progress(done, total)`` is called after each image; ``should_stop()`` is polled between images and between
    bootstrap resamples and makes the run raise EvaluationCancelled; ``on_phase(name)`` hears each phase begin
    ("evaluating", "statistics", "explaining"). Raises EvaluationError for incompatible models, data or settings.
    """
    config.validate()
    check_compatible(models, eval_set, config)

    def phase(name: str) -> None:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled(f"cancelled before {name}")
        if on_phase is not None:
            on_phase(name)

    if on_phase is not None:
        on_phase("evaluating")  # the stream looks at should_stop before its first image
    started = time.perf_counter()
    task = eval_set.task
    labels = model_labels(models)
    by_label = dict(zip(labels, models, strict=True))
    conditions = condition_grid(config.occlusion, config.corruptions, config.severities)
    result = stream(by_label, eval_set, conditions, seed=config.seed, batch_size=config.batch_size,
                    checks=config.checks, limit=config.limit, progress=progress, should_stop=should_stop)
    streamed = time.perf_counter()
    phase("statistics")
    indices = bootstrap_indices(result.images, config.bootstrap, config.seed)
    thresholds = {label: model.manifest.threshold for label, model in by_label.items()}
    class_names = list(eval_set.class_names)
    results, values = build_results(task, result, conditions, labels, class_names, indices, thresholds,
                                    should_stop)
    summaries, raw_summaries = build_summaries(task, values, conditions)
    comparisons = build_comparisons(task, labels, values, raw_summaries, conditions)
    figured = time.perf_counter()
    explained = []
    if config.explain:
        from robustness.evaluation.explain import explanations

        phase("explaining")
        explained = explanations(by_label, eval_set, config.explain, config.seed, config.batch_size)
    finished = time.perf_counter()
    checks: dict[str, Any] = ({label: "disabled" for label in labels} if result.checks is None
                              else result.checks.to_json(skipped=result.images_with_maps == 0))
    return {
        "schema": SCHEMA,
        "kind": "robustness-evaluation",
        "task": task,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {**asdict(config), "ci_level": CI_LEVEL, "ece_bins": ECE_BINS},
        "dataset": {"source": eval_set.source, "root": str(eval_set.root), "task": task, "images": result.images,
                    "images_with_class_maps": result.images_with_maps, "class_names": class_names,
                    "class_names_match_model": tuple(class_names) == tuple(models[0].manifest.class_names),
                    "ternary": bool(eval_set.ternary)},
        "models": [model_json(label, model) for label, model in by_label.items()],
        "metrics": {"names": list(CLASSIFIER_METRICS if task == Task.CLASSIFICATION else SEGMENTER_METRICS),
                    "headline": list(HEADLINE[task]), "unit": "percent", "lower_is_better": ["ECE"]},
        "conditions": [c.to_json() for c in conditions],
        "results": results,
        "summary": summaries,
        "comparisons": comparisons,
        "checks": checks,
        "explanations": explained,
        "timings": {"total_s": finished - started, "stream_s": streamed - started,
                    "figures_s": figured - streamed, "explain_s": finished - figured,
                    **{f"{k}_s": v for k, v in result.seconds.items()}, "model_inputs": result.inputs_run,
                    "images_per_s": result.images / max(streamed - started, 1e-9)},
    }


def write_outputs(report: dict, out: Path, should_stop: Callable[[], bool] | None = None) -> list[Path]:
    """Write report.json, report.md, the plots and the saliency PNGs into ``out`` (atomically); their paths.

    ``should_stop()`` is polled before each file; once true the rest is not written and EvaluationCancelled raised.
    """
    from robustness.evaluation.outputs import write_all

    return write_all(report, Path(out), should_stop)
