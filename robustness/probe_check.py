"""The probe set of a store entry and the figures a variant earns on it against fp32.

The same figures are computed twice: by the exporter on the machine whose guard judged the variant, and by a
server whose machine differs from that one. Both compare the variant's outputs with the fp32 outputs stored in the
entry, on the same prepared inputs, so the two sets of figures differ only by the kernels that produced them.
Classifiers: score MAE, top-label agreement and mAP (``robustness.metrics``). Segmenters: score MAE, pixel
agreement and mIoU over the probe pixels at the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.kinds import Task
from common.scores import class_scores
from model_store.manifest import Manifest, ManifestError, ProbeSet, verified_artifact
from robustness.metrics import confusion_matrix, mean_iou, multilabel_metrics

PROBE_FILES = {"inputs": "probe.inputs.npy", "outputs": "probe.fp32.npy", "labels": "probe.labels.npy"}
DEFAULT_PROBE_IMAGES = 64


@dataclass(frozen=True)
class Probes:
    """The arrays of a probe set: prepared inputs, fp32 logits on them, and labels."""

    inputs: np.ndarray
    outputs: np.ndarray
    labels: np.ndarray
    ternary: bool


def read_probes(manifest: Manifest) -> Probes | None:
    """The entry's probe set, its files verified against the manifest; None when the entry has none."""
    probe: ProbeSet | None = manifest.probe
    if probe is None:
        return None
    arrays = [np.load(verified_artifact(manifest, name), allow_pickle=False)
              for name in (probe.inputs, probe.outputs, probe.labels)]
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]) == probe.images:
        raise ManifestError(f"{manifest.path}: the probe files do not hold {probe.images} images each")
    return Probes(arrays[0].astype(np.float32, copy=False), arrays[1], arrays[2], probe.ternary)


def _scores(logits: np.ndarray, task: str, activation: str) -> np.ndarray:
    """Probabilities, classes on axis 1 (pixel softmax in float32: a segmenter's probes hold millions of logits)."""
    if task == Task.CLASSIFICATION:
        return class_scores(logits, activation)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float32)
    return exp / exp.sum(axis=1, keepdims=True)


def task_metric(task: str) -> str:
    """The probe metric of a task: mAP for classifiers, mIoU for segmenters."""
    return "mAP" if task == Task.CLASSIFICATION else "mIoU"


def _metric(task: str, scores: np.ndarray, top: np.ndarray, labels: np.ndarray, ternary: bool) -> float | None:
    if task == Task.CLASSIFICATION:
        try:
            return multilabel_metrics(scores, labels, ignore_zero=ternary)["mAP"]
        except ValueError:  # no class has a positive among the probes
            return None
    value = mean_iou(confusion_matrix(labels, top, scores.shape[1]))
    return None if np.isnan(value) else 100.0 * value


def probe_figures(task: str, activation: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray,
                  ternary: bool = False) -> dict[str, float | None]:
    """Score MAE, top-label (or pixel) agreement and the task metric of fp32 and of the candidate, with its delta."""
    ref_scores, cand_scores = _scores(reference, task, activation), _scores(candidate, task, activation)
    ref_top, cand_top = np.argmax(reference, axis=1), np.argmax(candidate, axis=1)
    agreement = float(np.mean(ref_top == cand_top))
    metric = task_metric(task)
    ref_value = _metric(task, ref_scores, ref_top, labels, ternary)
    value = _metric(task, cand_scores, cand_top, labels, ternary)
    return {"score_mae": float(np.mean(np.abs(ref_scores - cand_scores))),
            "top_label_agreement" if task == Task.CLASSIFICATION else "pixel_agreement": agreement,
            f"{metric}_fp32": ref_value, metric: value,
            f"{metric}_delta": None if ref_value is None or value is None else value - ref_value}
