"""Where inference runs: ONNX Runtime's execution providers in order of preference, and the CPUs this process may
use. Both the server and the offline evaluator choose from here; onnxruntime itself is imported only when asked."""

from __future__ import annotations

import os
from collections.abc import Collection

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)


def preferred_providers(available: Collection[str]) -> list[str]:
    """The ``available`` providers in order of preference (TensorRT, CUDA, CPU), always ending with the CPU."""
    return [p for p in GPU_PROVIDERS if p in available] + [CPU]


def onnx_providers() -> list[str]:
    """The providers this ONNX Runtime build lists, in order of preference, always ending with the CPU."""
    import onnxruntime as ort

    return preferred_providers(ort.get_available_providers())


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
