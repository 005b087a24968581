"""Provider choice (TensorRT > CUDA > CPU) and CPU session options."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.runtimes import CPU, CUDA, TENSORRT, choose_providers, cpu_session_options

ALL = ["AzureExecutionProvider", TENSORRT, CUDA, CPU]


@pytest.mark.parametrize(("available", "expected"), [
    (ALL, [TENSORRT, CUDA, CPU]),
    ([CPU, CUDA], [CUDA, CPU]),
    (["AzureExecutionProvider", CPU], [CPU]),
])
def test_default_order_is_tensorrt_cuda_cpu_among_the_available(available, expected):
    assert choose_providers(available) == expected


def test_requested_providers_keep_their_order_with_cpu_as_fallback():
    assert choose_providers(ALL, ["cuda"]) == [CUDA, CPU]
    assert choose_providers(ALL, ["cpu", "trt"]) == [CPU, TENSORRT]
    assert choose_providers(ALL, [CUDA, "cuda"]) == [CUDA, CPU]


def test_an_unavailable_provider_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'cuda' is not available here; available: AzureExecutionProvider, CPU"):
        choose_providers(["AzureExecutionProvider", CPU], ["cuda"])


def test_cpu_session_options():
    options = cpu_session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level.name == "ORT_ENABLE_ALL"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_tensorrt_gets_an_engine_cache_and_fp16_only_when_asked():
    from server.runtimes import CPU, CUDA, TENSORRT, provider_options

    assert provider_options([CUDA, CPU]) == [{}, {}]
    assert provider_options([TENSORRT, CUDA, CPU]) == [{"trt_fp16_enable": "False"}, {}, {}]
    cached = provider_options([TENSORRT, CPU], Path("/cache/trt"), trt_fp16=True)[0]
    assert cached == {"trt_fp16_enable": "True", "trt_engine_cache_enable": "True",
                      "trt_engine_cache_path": "/cache/trt", "trt_timing_cache_enable": "True",
                      "trt_timing_cache_path": "/cache/trt"}
