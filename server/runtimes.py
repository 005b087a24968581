"""Inference backends: ONNX Runtime (TensorRT > CUDA > CPU, IOBinding on GPU) and TorchScript."""

from __future__ import annotations

import ctypes
import functools
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from common.compute import CPU, CUDA, GPU_PROVIDERS, TENSORRT, preferred_providers

log = logging.getLogger("server.runtimes")

PROVIDER_ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
# The shared library ONNX Runtime opens for each GPU provider; it links TensorRT's or CUDA's own libraries.
PROVIDER_LIBRARIES = {TENSORRT: "libonnxruntime_providers_tensorrt.so", CUDA: "libonnxruntime_providers_cuda.so"}
SHARED_PROVIDER_LIBRARY = "libonnxruntime_providers_shared.so"


class Backend(Protocol):
    """A loaded model that maps an NCHW float32 batch to its output array."""

    kind: str  # "onnx" | "torchscript"
    provider: str  # what actually runs the graph, e.g. CPUExecutionProvider or torchscript:cpu
    providers: list[str]

    def run(self, images: np.ndarray) -> np.ndarray:
        """One forward pass over a batch."""
        ...


def runs_on_gpu(provider: str) -> bool:
    """Whether a backend's provider (an ONNX Runtime provider, or ``torchscript:DEVICE``) runs on a GPU."""
    return provider in GPU_PROVIDERS or provider.startswith("torchscript:cuda")


def library_load_error(path: Path) -> str | None:
    """None when the shared library at ``path`` and every library it links load in this process, else the
    loader's message (for example ``libnvinfer.so.10: cannot open shared object file``)."""
    if not path.exists():
        return None  # not a layout this check knows (another platform or build): leave it to ONNX Runtime
    try:
        shared = path.with_name(SHARED_PROVIDER_LIBRARY)
        if shared.exists():
            ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(path))
    except OSError as exc:
        return str(exc)
    return None


@functools.cache
def provider_load_error(provider: str) -> str | None:
    """Why a GPU provider that ONNX Runtime lists cannot run here (its libraries do not load), or None.

    onnxruntime-gpu lists TensorRT even where TensorRT is not installed; handed such a provider, every session
    prints a multi-line error banner and falls back. Loading the provider's library first tells the truth.
    """
    library = PROVIDER_LIBRARIES.get(provider)
    if library is None:
        return None
    return library_load_error(Path(ort.__file__).parent / "capi" / library)


def choose_providers(available: Sequence[str], requested: Sequence[str] = (),
                     load_error: Callable[[str], str | None] = provider_load_error) -> list[str]:
    """Providers to hand ONNX Runtime, best first, always ending with CPU as the fallback.

    Without ``requested``: TensorRT, CUDA, CPU, keeping those that are available and whose libraries load
    (one that is listed but cannot load is left out with one log line). Requested names may be full provider
    names or the aliases tensorrt/trt, cuda, cpu; one that is not available, or cannot load, is an error.
    """
    if not requested:
        chosen = []
        for provider in preferred_providers(available):
            error = None if provider == CPU else load_error(provider)
            if error is None:
                chosen.append(provider)
            else:
                log.warning("%s is listed by ONNX Runtime but cannot load here, so it is not used: %s",
                            provider, error.splitlines()[0] if error else "")
    else:
        chosen = []
        for name in requested:
            full = PROVIDER_ALIASES.get(name.lower(), name)
            if full not in available:
                raise ValueError(f"ONNX Runtime provider {name!r} is not available here; "
                                 f"available: {', '.join(available)}")
            error = load_error(full)
            if error is not None:
                raise ValueError(f"ONNX Runtime provider {name!r} is listed but its libraries do not load here: "
                                 f"{error.splitlines()[0] if error else ''}")
            if full not in chosen:
                chosen.append(full)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def provider_options(providers: Sequence[str], trt_cache_dir: Path | None = None, trt_fp16: bool = False,
                     cudnn_conv_algo_search: str = "HEURISTIC") -> list[dict[str, str]]:
    """ONNX Runtime options per provider.

    TensorRT keeps its built engines and timing cache in ``trt_cache_dir`` (a restart then loads engines in
    seconds instead of rebuilding them for minutes) and may build in FP16. CUDA chooses convolution algorithms by
    ``cudnn_conv_algo_search``: EXHAUSTIVE (ONNX Runtime's default) times every algorithm on the first run of
    each new input shape, 0.1-1.3 s per shape on an H200 (issue 21), where HEURISTIC took 45-280 ms at the same
    steady speed. The other CUDA options keep ONNX Runtime's defaults (see docs/gpu.md).
    """
    options: list[dict[str, str]] = []
    for provider in providers:
        if provider == TENSORRT:
            trt = {"trt_fp16_enable": str(trt_fp16)}
            if trt_cache_dir is not None:
                trt |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache_dir),
                        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(trt_cache_dir)}
            options.append(trt)
        elif provider == CUDA:
            options.append({"cudnn_conv_algo_search": cudnn_conv_algo_search, "do_copy_in_default_stream": "1"})
        else:
            options.append({})
    return options


def cpu_session_options(threads: int) -> ort.SessionOptions:
    """Full graph optimisation, ``threads`` intra-op threads, sequential execution, no idle spinning.

    Spinning is off because the server's decode threads share the cores: spinning workers would
    steal the time they need between batches.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxBackend:
    """One ONNX Runtime session; on CUDA/TensorRT inputs and outputs are bound to device memory."""

    kind = "onnx"

    def __init__(self, path: Path, input_name: str, output_name: str, providers: Sequence[str] = (),
                 threads: int = 1, trt_cache_dir: Path | None = None, trt_fp16: bool = False,
                 cudnn_conv_algo_search: str = "HEURISTIC") -> None:
        chosen = choose_providers(ort.get_available_providers(), providers)
        options = provider_options(chosen, trt_cache_dir, trt_fp16, cudnn_conv_algo_search)
        self.session = ort.InferenceSession(str(path), sess_options=cpu_session_options(threads), providers=chosen,
                                            provider_options=options)
        self.providers = self.session.get_providers()
        self.provider = self.providers[0]
        self.input_name, self.output_name = input_name, output_name
        self.device_binding = self.provider in GPU_PROVIDERS
        log.info("loaded %s with providers %s (IOBinding %s)", path, self.providers,
                 "on" if self.device_binding else "off")

    def run(self, images: Any) -> np.ndarray:
        """One forward pass of a NumPy batch, or of a torch tensor prepared on the device (bound where it lies,
        no host round trip); uses IOBinding when the session runs on a GPU."""
        if not isinstance(images, np.ndarray):
            if self.device_binding and images.is_cuda:
                return self._run_bound_device(images)
            images = images.cpu().numpy()
        if self.device_binding:
            return self._run_bound(images)
        return self.session.run([self.output_name], {self.input_name: images})[0]

    def _run_bound(self, images: np.ndarray) -> np.ndarray:
        """Copy the batch to the GPU once, let ORT allocate the output there, copy the result back once.

        Not exercised by the test suite: the test machines have no GPU.
        """
        binding = self.session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(images), "cuda", 0)
        binding.bind_ortvalue_input(self.input_name, device_input)
        binding.bind_output(self.output_name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _run_bound_device(self, images: Any) -> np.ndarray:
        """Bind a CUDA torch tensor's own memory as the input (it was decoded and prepared there).

        torch's stream is synchronised first: ONNX Runtime runs on its own stream and must see the finished
        tensor. Not exercised by the test suite: the test machines have no GPU.
        """
        import torch

        images = images.float().contiguous()
        torch.cuda.current_stream(images.device).synchronize()
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", images.device.index or 0, np.float32, tuple(images.shape),
                           images.data_ptr())
        binding.bind_output(self.output_name, "cuda", images.device.index or 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class TorchScriptBackend:
    """A frozen TorchScript artifact optimised for the device at load (CUDA when present)."""

    kind = "torchscript"

    def __init__(self, path: Path, threads: int = 1, device: str | None = None) -> None:
        import torch

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            torch.set_num_threads(threads)
        with warnings.catch_warnings():  # the optimiser warns about passes that do not apply to this graph
            warnings.simplefilter("ignore")
            self.module = torch.jit.optimize_for_inference(torch.jit.load(str(path), map_location=self.device).eval())
        self.provider = f"torchscript:{self.device}"
        self.providers = [self.provider]
        log.info("loaded %s on %s", path, self.device)

    def run(self, images: Any) -> np.ndarray:
        """One forward pass without autograd (a NumPy batch, or a torch tensor already on a device)."""
        torch = self._torch
        tensor = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        with torch.inference_mode():
            out = self.module(tensor.to(self.device))
        return out.float().cpu().numpy()
