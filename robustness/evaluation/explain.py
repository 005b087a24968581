"""RISE saliency overlays for the first few images, from irregular masks the evaluation draws (``--explain N``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from common.kinds import Task
from common.labels import BACKGROUND
from common.scores import class_map
from robustness.evaluation.conditions import derived_seed
from robustness.evaluation.onnx_model import EvalModel
from robustness.evaluation.streaming import input_groups
from robustness.masks import apply_mask, masks
from robustness.saliency import MIN_SALIENCY_MASKS, saliency_entries

EXPLAIN_MASKS = 4 * MIN_SALIENCY_MASKS
EXPLAIN_RATIO = (0.1, 0.5)  # hole ratios of the saliency masks: b2..b5


def explanations(models: Mapping[str, EvalModel], eval_set: Any, count: int, seed: int,
                 batch_size: int) -> list[dict[str, Any]]:
    """Per image, model and explained class: score, heatmap peak and a base64 PNG overlay on the resized image.

    Classifiers explain the image's positive classes; segmenters the foreground classes of their clean map.
    """
    entries: list[dict[str, Any]] = []
    for index in range(min(count, len(eval_set))):
        sample = eval_set.read(index)
        for builder, labels in input_groups(models):
            resized = builder.resize(sample.image)
            clean = builder.normalise(resized)
            holes = masks(EXPLAIN_MASKS, *builder.size, EXPLAIN_RATIO, derived_seed(seed, index, "explain"))
            batch = np.concatenate([clean[None], apply_mask(np.broadcast_to(clean, (len(holes), *clean.shape)),
                                                            holes).astype(np.float32)])
            for label in labels:
                model = models[label]
                outputs = np.concatenate([model.predict(batch[i:i + batch_size])
                                          for i in range(0, len(batch), batch_size)])
                task = model.manifest.task
                if task == Task.CLASSIFICATION:
                    classes = [int(c) for c in np.flatnonzero(np.asarray(sample.labels) == 1)]
                else:
                    classes = [int(c) for c in np.unique(class_map(outputs[0])) if c != BACKGROUND]
                for entry in saliency_entries(task, model.manifest.activation, model.manifest.class_names, outputs,
                                              holes, classes, resized):
                    entries.append({"image": sample.name, "index": index, "model": label, **entry})
    return entries
