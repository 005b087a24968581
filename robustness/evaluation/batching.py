"""Model inputs queued across images and run in batches; each output goes straight to its consumer."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from robustness.evaluation.onnx_model import EvalModel

Consumer = Callable[[Mapping[str, np.ndarray]], None]


class BatchRunner:
    """Collects (inputs per model, consumer) items and runs every model once per ``batch_size`` items.

    ``inputs`` maps the labels of the models that should see the item to its (3, H, W) input (models with the
    same input spec share one array); the consumer receives those models' outputs, keyed the same way, and
    reduces them at once, so no more than ``batch_size`` items are ever held. Items are consumed in the order
    they were added.
    """

    def __init__(self, models: Mapping[str, EvalModel], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size} must be at least 1")
        self.models, self.batch_size = dict(models), batch_size
        self.pending: list[tuple[Mapping[str, np.ndarray], Consumer]] = []
        self.seconds = 0.0
        self.inputs_run = 0

    def add(self, inputs: Mapping[str, np.ndarray], consumer: Consumer) -> None:
        """Queue one item; runs the batch when it is full."""
        self.pending.append((inputs, consumer))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def add_all(self, items: Sequence[tuple[Mapping[str, np.ndarray], Consumer]]) -> None:
        """Queue several items."""
        for inputs, consumer in items:
            self.add(inputs, consumer)

    def flush(self) -> None:
        """Run every model on the queued items and hand the outputs to their consumers."""
        if not self.pending:
            return
        items, self.pending = self.pending, []
        start = time.perf_counter()
        per_item: list[dict[str, np.ndarray]] = [{} for _ in items]
        for label, model in self.models.items():
            rows = [i for i, (inputs, _) in enumerate(items) if label in inputs]
            if not rows:
                continue
            out = model.predict(np.stack([items[i][0][label] for i in rows]))
            for row, i in enumerate(rows):
                per_item[i][label] = out[row]
            self.inputs_run += len(rows)
        self.seconds += time.perf_counter() - start
        for (_, consumer), outputs in zip(items, per_item, strict=True):
            consumer(outputs)
