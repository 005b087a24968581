"""The one order of ONNX Runtime providers (TensorRT, CUDA, CPU) and the CPU count, shared by server and evaluator."""

from __future__ import annotations

import os

import pytest

from common.compute import CPU, CUDA, TENSORRT, available_cores, onnx_providers, preferred_providers


@pytest.mark.parametrize(("available", "expected"), [
    (["AzureExecutionProvider", CPU, CUDA, TENSORRT], [TENSORRT, CUDA, CPU]),
    ([CPU, CUDA], [CUDA, CPU]),
    ([TENSORRT, CPU], [TENSORRT, CPU]),
    (["AzureExecutionProvider"], [CPU]),  # the CPU closes the list even where a build does not list it
    ([], [CPU]),
])
def test_preferred_providers_keep_tensorrt_cuda_cpu_among_the_available(available, expected):
    assert preferred_providers(available) == expected


def test_this_build_s_providers_end_with_the_cpu():
    assert onnx_providers()[-1] == CPU


def test_available_cores_is_the_affinity_mask(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cores() == 1
