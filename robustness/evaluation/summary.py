"""One number per robustness question, from a metric's figures over the grid (MMDetection's robustness_eval).

- ``P``: the clean figure.
- ``mPC``: the mean over every corruption x severity cell; ``rPC`` = mPC / P.
- ``mPO`` / ``rPO``: the same over the occlusion buckets.
- ``severity/<s>``: the mean over corruptions at severity s; ``corruption/<name>``: the mean over severities;
  ``bucket/<b>``: one occlusion bucket.

Every value is a (point, bootstrap samples) pair, so summaries get intervals and paired differences the same way
the cells do. ``falls_monotonically`` says whether the per-severity means never rise from one severity to the next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustness.evaluation.conditions import CLEAN, CORRUPTION, OCCLUSION, Condition
from robustness.evaluation.statistics import figure, nanmean, ratio

Value = tuple[float, np.ndarray]  # point estimate, (B,) bootstrap samples


def _mean(values: Sequence[Value]) -> Value:
    return float(nanmean(np.array([p for p, _ in values]))), nanmean(np.stack([s for _, s in values]), axis=0)


def summary_values(cells: Mapping[str, Value], conditions: Sequence[Condition]) -> dict[str, Value]:
    """P, mPC, rPC, mPO, rPO, per-severity, per-corruption and per-bucket values of one metric of one model."""
    clean = next(c for c in conditions if c.kind == CLEAN)
    point, samples = cells[clean.key]
    out: dict[str, Value] = {"P": (point, samples)}
    corrupted = [c for c in conditions if c.kind == CORRUPTION]
    occluded = [c for c in conditions if c.kind == OCCLUSION]
    if corrupted:
        m = _mean([cells[c.key] for c in corrupted])
        out["mPC"], out["rPC"] = m, (float(ratio(m[0], point)), ratio(m[1], samples))
        for severity in sorted({c.severity for c in corrupted}):
            out[f"severity/{severity}"] = _mean([cells[c.key] for c in corrupted if c.severity == severity])
        for name in dict.fromkeys(c.corruption for c in corrupted):
            out[f"corruption/{name}"] = _mean([cells[c.key] for c in corrupted if c.corruption == name])
    if occluded:
        m = _mean([cells[c.key] for c in occluded])
        out["mPO"], out["rPO"] = m, (float(ratio(m[0], point)), ratio(m[1], samples))
        for c in occluded:
            out[f"bucket/{c.bucket}"] = cells[c.key]
    return out


def difference(model: Mapping[str, Value], other: Mapping[str, Value]) -> dict[str, Value]:
    """Paired differences other - model of every value both have (same bootstrap resamples)."""
    return {key: (other[key][0] - model[key][0], other[key][1] - model[key][1]) for key in model if key in other}


def falls_monotonically(values: Mapping[str, Value]) -> bool | None:
    """Whether the per-severity means never rise with severity; None with fewer than two severities."""
    points = [v[0] for k, v in sorted(values.items(), key=lambda kv: _severity(kv[0])) if k.startswith("severity/")]
    if len(points) < 2 or not np.all(np.isfinite(points)):
        return None
    return bool(np.all(np.diff(points) <= 0))


def _severity(key: str) -> int:
    return int(key.split("/")[1]) if key.startswith("severity/") else 0


def summary_json(values: Mapping[str, Value], with_trend: bool = True) -> dict[str, Any]:
    """Nested JSON: P/mPC/rPC/mPO/rPO figures, then per_severity, per_corruption and per_bucket tables."""
    out: dict[str, Any] = {key: figure(*values[key]) if key in values else None
                           for key in ("P", "mPC", "rPC", "mPO", "rPO")}
    for prefix, name in (("severity/", "per_severity"), ("corruption/", "per_corruption"), ("bucket/", "per_bucket")):
        out[name] = {key[len(prefix):]: figure(*value) for key, value in values.items() if key.startswith(prefix)}
    if with_trend:
        out["falls_monotonically"] = falls_monotonically(values)
    return out
