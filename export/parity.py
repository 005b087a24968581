"""Parity of exported artifacts against eager PyTorch, checked before anything is written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from common.kinds import Activation, Task

FP32_TOL = 1e-3
FP16_TOL = 2e-2

Runner = Callable[[np.ndarray], np.ndarray]


class ParityError(RuntimeError):
    """An exported artifact disagrees with eager PyTorch beyond the tolerance."""


def parity_cases(image_size: int, dynamic_size: bool, multiple: int = 32) -> list[tuple[int, int, int]]:
    """(batch, height, width) cases: batch 1 and 3 at the native size, plus two more sizes if dynamic."""
    cases = [(1, image_size, image_size), (3, image_size, image_size)]
    if dynamic_size:
        small = max(multiple, (image_size * 3 // 4) // multiple * multiple)
        large = (image_size * 3 // 2 + multiple - 1) // multiple * multiple
        cases += [(2, small, large), (1, large, small)]
    return cases


def decisions_agree(task: str, eager: np.ndarray, other: np.ndarray, threshold: float, margin: float,
                    activation: str = Activation.SIGMOID) -> int:
    """Count decisions that differ where eager is not within ``margin`` of the boundary.

    Multi-label classification: the label set ``sigmoid > threshold``. Single-label (softmax) classification
    and segmentation: the argmax over classes (per pixel for segmentation).
    """
    if task == Task.CLASSIFICATION and activation == Activation.SIGMOID:
        scores = 1.0 / (1.0 + np.exp(-eager.astype(np.float64)))
        other_scores = 1.0 / (1.0 + np.exp(-other.astype(np.float64)))
        clear = np.abs(scores - threshold) > margin
        return int(((scores > threshold) != (other_scores > threshold))[clear].sum())
    top2 = np.sort(eager, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > margin
    return int((eager.argmax(axis=1) != other.argmax(axis=1))[clear].sum())


def check_parity(model: nn.Module, runners: dict[str, Runner], cases: Sequence[tuple[int, int, int]],
                 task: str, threshold: float, tol: float, seed: int = 0,
                 activation: str = Activation.SIGMOID) -> dict[str, Any]:
    """Run every runner against eager on seeded inputs; raise ``ParityError`` on any failure."""
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"tolerance": tol, "rule": "max|diff| <= tol * max(1, max|eager|)", "checks": []}
    failures = []
    for batch, height, width in cases:
        x = rng.random((batch, 3, height, width), dtype=np.float32)
        with torch.no_grad():
            eager = model.eval()(torch.from_numpy(x)).numpy()
        bound = tol * max(1.0, float(np.abs(eager).max()))
        for name, run in runners.items():
            try:
                out = np.asarray(run(x))
            except Exception as exc:  # an artifact that cannot run at this shape is a parity failure
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                failures.append(f"{name} at {batch}x3x{height}x{width}: failed to run ({first})")
                continue
            if out.shape != eager.shape:
                failures.append(f"{name} at {batch}x3x{height}x{width}: shape {out.shape} vs eager {eager.shape}")
                continue
            diff = float(np.abs(out.astype(np.float64) - eager).max())
            flips = decisions_agree(task, eager, out, threshold, margin=bound, activation=activation)
            report["checks"].append({"runtime": name, "input": [batch, 3, height, width], "max_abs_diff": diff,
                                     "bound": bound, "decision_mismatches": flips})
            if not diff <= bound:
                failures.append(f"{name} at {batch}x3x{height}x{width}: max|diff| {diff:.3g} > {bound:.3g}")
            elif flips:
                failures.append(f"{name} at {batch}x3x{height}x{width}: {flips} predicted label(s) differ")
    report["max_abs_diff"] = {name: max((c["max_abs_diff"] for c in report["checks"] if c["runtime"] == name),
                                        default=None) for name in runners}
    report["passed"] = not failures
    if failures:
        raise ParityError("parity failed: " + "; ".join(failures))
    return report
