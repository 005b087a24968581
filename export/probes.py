"""The probe set an entry with variants keeps: the first guard images prepared as the model's input, their labels
and the fp32 outputs on them, so that a server on another machine can re-check a variant (``server.recheck``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from common.compute import onnx_providers
from common.datasets import EvalSet
from common.kinds import Task
from common.scores import resize_class_map
from model_store.manifest import ONNX_FILE, FileRecord, Manifest, ProbeSet, verified_artifact
from robustness.evaluation.conditions import InputBuilder
from robustness.probe_check import DEFAULT_PROBE_IMAGES, PROBE_FILES, probe_figures, read_probes

PROBE_BATCH = 8


def probe_arrays(manifest: Manifest, eval_set: EvalSet, images: int) -> tuple[np.ndarray, np.ndarray]:
    """Prepared inputs of the first ``images`` items and their labels (targets, or class maps at the input size)."""
    builder = InputBuilder(manifest.input_size, manifest.input.mean, manifest.input.std)
    height, width = manifest.input_size
    inputs, labels = [], []
    for index in range(min(images, len(eval_set))):
        sample = eval_set.read(index)
        inputs.append(builder.normalise(builder.resize(sample.image)))
        if manifest.task == Task.CLASSIFICATION:
            labels.append(sample.labels)
        else:
            if sample.class_map is None:
                raise ValueError(f"{eval_set.items[index].image}: no class map, so no segmentation probe")
            labels.append(resize_class_map(sample.class_map, (width, height)))
    dtype = np.int8 if manifest.task == Task.CLASSIFICATION else np.uint8
    return np.stack(inputs).astype(np.float32), np.stack(labels).astype(dtype)


def onnx_outputs(path: Path, input_name: str, inputs: np.ndarray) -> np.ndarray:
    """The graph's first output on ``inputs``, in batches, on the providers the guard uses."""
    session = ort.InferenceSession(str(path), providers=onnx_providers())
    return np.concatenate([session.run(None, {input_name: inputs[i:i + PROBE_BATCH]})[0]
                           for i in range(0, len(inputs), PROBE_BATCH)])


def write_probes(entry: Path, manifest: Manifest, eval_set: EvalSet,
                 images: int = DEFAULT_PROBE_IMAGES) -> tuple[ProbeSet, dict[str, FileRecord]]:
    """Write the probe files into ``entry``; the ProbeSet record and the files' records for the manifest."""
    inputs, labels = probe_arrays(manifest, eval_set, images)
    outputs = onnx_outputs(verified_artifact(manifest, ONNX_FILE), manifest.input.name, inputs)
    for key, array in (("inputs", inputs), ("outputs", outputs.astype(np.float32)), ("labels", labels)):
        np.save(entry / PROBE_FILES[key], array, allow_pickle=False)
    records = {name: FileRecord.of(entry / name) for name in PROBE_FILES.values()}
    probe = ProbeSet(PROBE_FILES["inputs"], PROBE_FILES["outputs"], PROBE_FILES["labels"], len(inputs),
                     eval_set.ternary if manifest.task == Task.CLASSIFICATION else False,
                     f"{eval_set.root} (test split, first {len(inputs)})")
    return probe, records


def variant_probe_figures(manifest: Manifest, filename: str) -> dict[str, float | None]:
    """A variant's figures on the entry's probe set, on this machine (the manifest must list the probe files)."""
    probes = read_probes(manifest)
    assert probes is not None
    candidate = onnx_outputs(verified_artifact(manifest, filename), manifest.input.name, probes.inputs)
    return probe_figures(manifest.task, manifest.activation, probes.outputs, candidate, probes.labels, probes.ternary)
