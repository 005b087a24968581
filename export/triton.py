"""Triton model-repository entry: ``<repo>/<name>/config.pbtxt`` plus ``<repo>/<name>/1/model.onnx``."""

from __future__ import annotations

import shutil
from pathlib import Path

from export.formats import INPUT_NAME, OUTPUT_NAME


def triton_config(name: str, task: str, num_classes: int, image_size: int, dynamic_size: bool,
                  max_batch_size: int = 8, max_queue_delay_us: int = 5000) -> str:
    """The config.pbtxt text: ONNX Runtime platform, dynamic batching, dims without the batch axis."""
    side = -1 if dynamic_size else image_size
    out_dims = [num_classes] if task == "classification" else [num_classes, side, side]
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ 3, {side}, {side} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{OUTPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {', '.join(str(d) for d in out_dims)} ]",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {max_batch_size} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [ { kind: KIND_AUTO } ]",
        "",
    ])


def write_triton_entry(repo: Path, name: str, onnx_path: Path, task: str, num_classes: int, image_size: int,
                       dynamic_size: bool, max_batch_size: int = 8) -> Path:
    """Write the repository entry and return its folder."""
    entry = repo / name
    (entry / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, entry / "1" / "model.onnx")
    (entry / "config.pbtxt").write_text(
        triton_config(name, task, num_classes, image_size, dynamic_size, max_batch_size))
    return entry
