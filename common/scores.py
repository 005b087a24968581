"""Model outputs -> scores and named labels: sigmoid (multi-label) or softmax (single-label) classifiers, and
class maps of segmenters. Shared by the server's answers and the robustness reports (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import special

from common.kinds import Activation

DIGITS = 6  # scores are rounded so that JSON answers are stable and short


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (no overflow warnings)."""
    return special.expit(np.asarray(logits, dtype=np.float64))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64, stable for any logit range."""
    return special.softmax(np.asarray(logits, dtype=np.float64), axis=-1)


SCORERS = {Activation.SIGMOID: sigmoid, Activation.SOFTMAX: softmax}


def class_scores(logits: np.ndarray, activation: str) -> np.ndarray:
    """Classifier logits -> probabilities with the manifest's activation (``sigmoid`` or ``softmax``)."""
    if activation not in SCORERS:
        raise ValueError(f"activation {activation!r} must be one of {', '.join(SCORERS)}")
    return SCORERS[activation](logits)


def top_labels(scores: np.ndarray, class_names: Sequence[str], top_k: int | None = None,
               threshold: float | None = None) -> list[dict[str, Any]]:
    """``[{name, score}]`` highest first (ties in class order): at most ``top_k``, only scores >= ``threshold``."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"name": class_names[i], "score": round(float(scores[i]), DIGITS)} for i in order
            if threshold is None or scores[i] >= threshold]


def score_table(scores: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Every class's score, in class order."""
    return {name: round(float(s), DIGITS) for name, s in zip(class_names, scores, strict=True)}


def class_map(logits: np.ndarray) -> np.ndarray:
    """(C, H, W) pixel logits -> (H, W) uint8 class ids (argmax; softmax does not change it)."""
    if logits.shape[0] > 256:
        raise ValueError(f"{logits.shape[0]} classes do not fit a uint8 class map (at most 256)")
    return np.argmax(logits, axis=0).astype(np.uint8)


def resize_class_map(classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 class map to (width, height)."""
    if (classes.shape[1], classes.shape[0]) == size:
        return classes
    return np.asarray(Image.fromarray(classes, mode="L").resize(size, Image.NEAREST))
