"""Triton model-repository entry: ``<repo>/<name>/config.pbtxt`` plus ``<repo>/<name>/1/model.onnx``."""

from __future__ import annotations

import shutil
from pathlib import Path

from model_store.manifest import ONNX_FILE, Manifest


def dims(shape: list[int]) -> str:
    """A config.pbtxt dims list."""
    return f"[ {', '.join(str(d) for d in shape)} ]"


def triton_config(manifest: Manifest, max_batch_size: int = 8, max_queue_delay_us: int = 5000) -> str:
    """The config.pbtxt text: ONNX Runtime platform, dynamic batching, dims without the batch axis."""
    input_shape, output_shape = manifest.tensor_shapes()
    return "\n".join([
        f'name: "{manifest.name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f'    name: "{manifest.input.name}"',
        "    data_type: TYPE_FP32",
        f"    dims: {dims(input_shape[1:])}",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{manifest.output.name}"',
        "    data_type: TYPE_FP32",
        f"    dims: {dims(output_shape[1:])}",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {max_batch_size} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [ { kind: KIND_AUTO } ]",
        "",
    ])


def write_triton_entry(repo: Path, manifest: Manifest, max_batch_size: int = 8) -> Path:
    """Write the repository entry for a store entry's ONNX model and return its folder."""
    entry = repo / manifest.name
    (entry / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest.artifact(ONNX_FILE), entry / "1" / "model.onnx")  # Triton's own name
    (entry / "config.pbtxt").write_text(triton_config(manifest, max_batch_size))
    return entry
