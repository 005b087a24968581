"""Inference backends: ONNX Runtime (TensorRT > CUDA > CPU, IOBinding on GPU) and TorchScript."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

log = logging.getLogger("server.runtimes")

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_PREFERENCE = (TENSORRT, CUDA, CPU)
PROVIDER_ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
GPU_PROVIDERS = (TENSORRT, CUDA)


class Backend(Protocol):
    """A loaded model that maps an NCHW float32 batch to its output array."""

    kind: str  # "onnx" | "torchscript"
    provider: str  # what actually runs the graph, e.g. CPUExecutionProvider or torchscript:cpu
    providers: list[str]

    def run(self, images: np.ndarray) -> np.ndarray:
        """One forward pass over a batch."""
        ...


def choose_providers(available: Sequence[str], requested: Sequence[str] = ()) -> list[str]:
    """Providers to hand ONNX Runtime, best first, always ending with CPU as the fallback.

    Without ``requested``: TensorRT, CUDA, CPU, keeping those that are available. Requested names may
    be full provider names or the aliases tensorrt/trt, cuda, cpu; one that is not available is an error.
    """
    if not requested:
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    else:
        chosen = []
        for name in requested:
            full = PROVIDER_ALIASES.get(name.lower(), name)
            if full not in available:
                raise ValueError(f"ONNX Runtime provider {name!r} is not available here; "
                                 f"available: {', '.join(available)}")
            if full not in chosen:
                chosen.append(full)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def provider_options(providers: Sequence[str], trt_cache_dir: Path | None = None,
                     trt_fp16: bool = False) -> list[dict[str, str]]:
    """ONNX Runtime options per provider: TensorRT keeps its built engines and timing cache in ``trt_cache_dir``
    (a restart then loads engines in seconds instead of rebuilding them for minutes) and may build in FP16."""
    options: list[dict[str, str]] = []
    for provider in providers:
        if provider == TENSORRT:
            trt = {"trt_fp16_enable": str(trt_fp16)}
            if trt_cache_dir is not None:
                trt |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache_dir),
                        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(trt_cache_dir)}
            options.append(trt)
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
                 threads: int = 1, trt_cache_dir: Path | None = None, trt_fp16: bool = False) -> None:
        chosen = choose_providers(ort.get_available_providers(), providers)
        self.session = ort.InferenceSession(str(path), sess_options=cpu_session_options(threads), providers=chosen,
                                            provider_options=provider_options(chosen, trt_cache_dir, trt_fp16))
        self.providers = self.session.get_providers()
        self.provider = self.providers[0]
        self.input_name, self.output_name = input_name, output_name
        self.device_binding = self.provider in GPU_PROVIDERS
        log.info("loaded %s with providers %s (IOBinding %s)", path, self.providers,
                 "on" if self.device_binding else "off")

    def run(self, images: np.ndarray) -> np.ndarray:
        """One forward pass; uses IOBinding when the session runs on a GPU."""
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

    def run(self, images: np.ndarray) -> np.ndarray:
        """One forward pass without autograd."""
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(images).to(self.device))
        return out.float().cpu().numpy()
