"""The accuracy guard: a lower-precision variant against fp32 on a held-out test split, clean and under high masks.

Every model sees the same inputs (the offline evaluator's clean images and one seeded b6 irregular mask per image),
so every delta is paired. Classifiers are judged by mAP, segmenters by mIoU and IA-mIoU: a variant that loses more
than ``tolerance`` points on the clean test split is rejected. The same deltas under high masks are recorded with
their 95% intervals, since quantisation may change robustness as well as accuracy; ``gate_masked`` makes them
reject too (one mask per image makes them about twice as noisy as the clean ones). Top-label agreement (pixel
agreement for segmenters) and images/s against fp32, measured in the same run, are recorded, with the machine
they were measured on (CPU ISA, ONNX Runtime version, provider: ``model_store.machine``), since INT8 numerics and
speed differ across CPUs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from common.compute import onnx_providers
from common.datasets import EvalSet
from common.kinds import Task
from model_store.machine import machine_record
from model_store.manifest import ACCEPTED, ONNX_FILE, REJECTED, Manifest, verified_artifact
from robustness.evaluation import EvaluationConfig, OnnxModel, evaluate
from robustness.evaluation.conditions import OCCLUSION, Condition

HIGH_BUCKET = "b6"
DEFAULT_TOLERANCE = 0.5
DEFAULT_GUARD_IMAGES = 300
GUARD_METRICS = {Task.CLASSIFICATION: ("mAP",), Task.SEGMENTATION: ("mIoU", "IA-mIoU")}
SPEED_BATCH = 8
DEFAULT_SPEED_SECONDS = 1.5


@dataclass(frozen=True)
class Verdict:
    """The guard's decision on one variant, the figures behind it and how they were measured."""

    status: str
    reason: str
    measures: dict[str, float | None]
    setup: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)  # where the figures were measured


class AgreementRecorder:
    """An EvalModel that keeps the top class of every output it returns (per image, or per pixel)."""

    def __init__(self, model: OnnxModel) -> None:
        self.model, self.name, self.manifest = model, model.name, model.manifest
        self.providers, self.precision = model.providers, model.precision
        self.top: list[np.ndarray] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The wrapped model's logits; their argmax over classes is kept."""
        out = self.model.predict(batch)
        self.top.append(np.argmax(out, axis=1).ravel())
        return out


def images_per_second(manifest: Manifest, filenames: Sequence[str], seconds: float = DEFAULT_SPEED_SECONDS,
                      rounds: int = 3, batch: int = SPEED_BATCH) -> tuple[dict[str, float], str]:
    """Each file's best images/s over ``rounds`` timed windows of batch-``batch`` inference on zeros, the files'
    windows taking turns so that a change of load falls on all of them alike; and the provider that ran them."""
    sessions = {name: ort.InferenceSession(str(verified_artifact(manifest, name)), providers=onnx_providers())
                for name in dict.fromkeys(filenames)}
    height, width = manifest.input_size
    feed = {manifest.input.name: np.zeros((batch, 3, height, width), dtype=np.float32)}
    for session in sessions.values():
        session.run(None, feed)
    best = dict.fromkeys(sessions, 0.0)
    for _ in range(rounds):
        for name, session in sessions.items():
            done, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or done == 0:
                session.run(None, feed)
                done += batch
            best[name] = max(best[name], done / elapsed)
    return best, next(iter(sessions.values())).get_providers()[0]


def _value(report: dict, label: str, key: str, metric: str) -> float | None:
    value = report["results"][label][key]["metrics"][metric]["value"]
    return None if value is None or np.isnan(value) else float(value)


def _verdict(report: dict, precision: str, differences: dict, task: str, tolerance: float,
             gate_masked: bool) -> tuple[list[str], dict[str, float | None]]:
    """The reasons to reject one variant and its paired figures against fp32, from the shared report."""
    masked = Condition(OCCLUSION, bucket=HIGH_BUCKET).key
    measures: dict[str, float | None] = {}
    reasons = []
    for metric in GUARD_METRICS[task]:
        for prefix, key in (("", "clean"), ("masked_", masked)):
            ref, var = _value(report, "fp32", key, metric), _value(report, precision, key, metric)
            delta = None if ref is None or var is None else var - ref
            low, high = differences[key][metric]["ci"]
            measures |= {f"{prefix}{metric}_fp32": ref, f"{prefix}{metric}": var, f"{prefix}{metric}_delta": delta,
                         f"{prefix}{metric}_delta_ci_low": low, f"{prefix}{metric}_delta_ci_high": high}
            where = "masked (b6) " if prefix else ""
            if prefix and not gate_masked:
                continue
            if delta is None:
                reasons.append(f"{where}{metric} is undefined on this split")
            elif -delta > tolerance:
                reasons.append(f"{where}{metric} changes by {delta:+.2f} points (tolerance {tolerance:g}: the most "
                               "it may drop)")
    return reasons, measures


def guard_variants(manifest: Manifest, files: Mapping[str, str], eval_set: EvalSet,
                   tolerance: float = DEFAULT_TOLERANCE, limit: int | None = DEFAULT_GUARD_IMAGES, seed: int = 0,
                   batch: int = 16, progress: Callable[[int, int], None] | None = None,
                   gate_masked: bool = False, speed_seconds: float = DEFAULT_SPEED_SECONDS) -> dict[str, Verdict]:
    """Evaluate every variant (precision -> a file listed in the manifest) against ``model.onnx`` in one pass over
    the test split, and decide on each."""
    reference = AgreementRecorder(OnnxModel(manifest, "fp32"))
    candidates = {precision: AgreementRecorder(OnnxModel(manifest, precision, filename, precision=precision))
                  for precision, filename in files.items()}
    config = EvaluationConfig(occlusion=(HIGH_BUCKET,), corruptions=(), severities=(), seed=seed, batch_size=batch,
                              bootstrap=200, limit=limit, checks=False)
    report = evaluate([reference, *candidates.values()], eval_set, config, progress=progress)
    differences = {c["other"]: c["conditions"] for c in report["comparisons"]}
    reference_top = np.concatenate(reference.top)
    speeds, provider = images_per_second(manifest, [ONNX_FILE, *files.values()], seconds=speed_seconds)
    fp32_speed = speeds[ONNX_FILE]
    setup = {"guard_data": str(eval_set.root), "guard_split": "test", "guard_images": report["dataset"]["images"],
             "masked_bucket": HIGH_BUCKET, "tolerance": tolerance,
             "gated_on": [f"{p}{m}" for m in GUARD_METRICS[manifest.task] for p in ("", "masked_")
                          if gate_masked or not p], "seed": seed, "speed_provider": provider,
             "speed_batch": SPEED_BATCH, "speed_seconds": speed_seconds}
    machine = machine_record(ort.__version__, provider)
    verdicts = {}
    for precision, candidate in candidates.items():
        reasons, measures = _verdict(report, precision, differences[precision], manifest.task, tolerance,
                                     gate_masked)
        agreement = float(np.mean(reference_top == np.concatenate(candidate.top)))
        measures["top_label_agreement" if manifest.task == Task.CLASSIFICATION else "pixel_agreement"] = agreement
        speed = speeds[files[precision]]
        measures |= {"images_per_s": speed, "fp32_images_per_s": fp32_speed, "speedup": speed / fp32_speed}
        verdicts[precision] = Verdict(REJECTED if reasons else ACCEPTED, "; ".join(reasons), measures, dict(setup),
                                      dict(machine))
    return verdicts
