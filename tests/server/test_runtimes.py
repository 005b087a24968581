"""Provider choice (TensorRT > CUDA > CPU, only those whose libraries load) and session options."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from server.runtimes import CPU, CUDA, TENSORRT, choose_providers, cpu_session_options, library_load_error

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

    cuda = {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1"}
    assert provider_options([CUDA, CPU]) == [cuda, {}]
    assert provider_options([TENSORRT, CUDA, CPU]) == [{"trt_fp16_enable": "False"}, cuda, {}]
    assert provider_options([CUDA], cudnn_conv_algo_search="EXHAUSTIVE")[0]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    cached = provider_options([TENSORRT, CPU], Path("/cache/trt"), trt_fp16=True)[0]
    assert cached == {"trt_fp16_enable": "True", "trt_engine_cache_enable": "True",
                      "trt_engine_cache_path": "/cache/trt", "trt_timing_cache_enable": "True",
                      "trt_timing_cache_path": "/cache/trt"}


def test_a_listed_provider_whose_libraries_do_not_load_is_left_out_by_default_and_an_error_when_asked_for():
    missing = {TENSORRT: "libnvinfer.so.10: cannot open shared object file: No such file or directory"}
    assert choose_providers(ALL, load_error=missing.get) == [CUDA, CPU]
    with pytest.raises(ValueError, match=r"'trt' is listed but its libraries do not load here: libnvinfer.so.10"):
        choose_providers(ALL, ["trt"], load_error=missing.get)


def test_a_library_whose_dependency_is_missing_fails_to_load_with_the_loaders_reason(tmp_path):
    """Built for real: libneeds.so links libgone.so, which is then deleted (as libnvinfer is absent from a CUDA
    image without TensorRT)."""
    (tmp_path / "gone.c").write_text("int gone(void) { return 1; }\n")
    (tmp_path / "needs.c").write_text("int gone(void);\nint needs(void) { return gone(); }\n")
    gcc = ["gcc", "-shared", "-fPIC"]
    subprocess.run([*gcc, "-o", tmp_path / "libgone.so", tmp_path / "gone.c"], check=True)
    subprocess.run([*gcc, "-o", tmp_path / "libneeds.so", tmp_path / "needs.c", f"-L{tmp_path}", "-lgone",
                    f"-Wl,-rpath,{tmp_path}"], check=True)
    assert library_load_error(tmp_path / "libgone.so") is None  # (a library, once loaded, stays loaded)
    (tmp_path / "libgone.so").unlink()
    error = library_load_error(tmp_path / "libneeds.so")
    assert error is not None and "libgone.so" in error
    assert library_load_error(tmp_path / "absent.so") is None  # a layout the check does not know: ORT decides


def test_the_onnx_backend_runs_a_torch_tensor_like_the_same_numpy_batch(store):
    import torch

    from model_store.manifest import entry_dir, load_manifest
    from server.runtimes import OnnxBackend
    from tests.conftest import CLASSIFIER

    manifest = load_manifest(entry_dir(store, CLASSIFIER))
    backend = OnnxBackend(manifest.artifact("model.onnx"), manifest.input.name, manifest.output.name)
    images = np.random.default_rng(5).random((2, 3, *manifest.input.size), dtype=np.float32)
    np.testing.assert_array_equal(backend.run(torch.from_numpy(images)), backend.run(images))
