"""KServe v2 / Open Inference Protocol tensors: parse infer requests (JSON or binary extension), build answers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.manifest import Manifest
from server.errors import ApiError
from server.responses import dumps

HEADER_LENGTH = "inference-header-content-length"
DATATYPE = "FP32"


def _bad(detail: str) -> ApiError:
    return ApiError(400, "invalid_tensor", detail)


def model_metadata(manifest: Manifest, platform: str) -> dict[str, Any]:
    """The v2 model metadata document; ``parameters`` says how to read the (raw logit) output."""
    input_shape, output_shape = manifest.tensor_shapes()
    return {
        "name": manifest.name,
        "versions": [manifest.version],
        "platform": platform,
        "inputs": [{"name": manifest.input.name, "datatype": DATATYPE, "shape": input_shape}],
        "outputs": [{"name": manifest.output.name, "datatype": DATATYPE, "shape": output_shape}],
        "parameters": {"task": manifest.task, "activation": manifest.activation,
                       "output_kind": manifest.output.kind},
    }


@dataclass(frozen=True)
class InferRequest:
    """A parsed v2 infer request: the input batch and how the output should be sent."""

    images: np.ndarray
    request_id: str | None
    binary_output: bool


def _json_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(f"Inference-Header-Content-Length {header_length!r} must be a byte count <= {len(body)}")
        json_part, binary = body[:int(header_length)], body[int(header_length):]
    try:
        header = json.loads(json_part)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad("the request's JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise _bad("the request must be a JSON object with an 'inputs' list")
    return header, binary


def _check_shape(shape: Any, manifest: Manifest) -> tuple[int, ...]:
    expected, _ = manifest.tensor_shapes()
    if not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise _bad(f"input shape {shape!r} must be four positive integers {expected} (batch, channels, height, width)")
    if any(e not in (-1, d) for e, d in zip(expected, shape, strict=True)):
        raise _bad(f"input shape {shape} does not fit the model's {expected} (-1 = any)")
    return tuple(shape)


def _input_tensor(spec: dict[str, Any], binary: bytes, offset: int, manifest: Manifest) -> tuple[np.ndarray, int]:
    shape = _check_shape(spec.get("shape"), manifest)
    if spec.get("datatype") != DATATYPE:
        raise _bad(f"input datatype {spec.get('datatype')!r} is not supported; send {DATATYPE}")
    count = math.prod(shape)  # Python integers: a huge declared shape cannot overflow into a small count
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != count * 4 or offset + size > len(binary):
            raise _bad(f"binary_data_size {size} does not match shape {list(shape)} of FP32 "
                       f"({count * 4} bytes) or the bytes sent")
        return np.frombuffer(binary, dtype="<f4", count=count, offset=offset).reshape(shape), offset + size
    if "data" not in spec:
        raise _bad("the input has neither 'data' nor a binary_data_size parameter")
    try:
        data = np.asarray(spec["data"], dtype=np.float32)
    except (TypeError, ValueError):
        raise _bad("input data must be numbers (a flat row-major list or nested lists)") from None
    if data.size != count:
        raise _bad(f"input data holds {data.size} values; shape {list(shape)} needs {count}")
    return data.reshape(shape), offset


def parse_infer_request(body: bytes, header_length: str | None, manifest: Manifest) -> InferRequest:
    """Validate a v2 infer request for this model; 400 ``invalid_tensor`` names what is wrong."""
    header, binary = _json_header(body, header_length)
    inputs = header.get("inputs")
    name = manifest.input.name
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"'inputs' must be a list with exactly one tensor named {name!r}")
    if inputs[0].get("name") != name:
        raise _bad(f"input name {inputs[0].get('name')!r} is unknown; this model's input is {name!r}")
    images, _ = _input_tensor(inputs[0], binary, 0, manifest)
    if not np.isfinite(images).all():
        raise _bad(f"the input holds {int(np.count_nonzero(~np.isfinite(images)))} NaN or infinite values; "
                   "send finite FP32 numbers")
    binary_output = bool((header.get("parameters") or {}).get("binary_data_output", False))
    outputs = header.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise _bad("'outputs' must be a list of objects with a 'name'")
        for requested in outputs:
            if requested.get("name") != manifest.output.name:
                raise _bad(f"output {requested.get('name')!r} is unknown; this model's output is "
                           f"{manifest.output.name!r}")
            parameters = requested.get("parameters") or {}
            if parameters.get("classification"):
                raise _bad("the classification extension is not supported; read the logits output")
            binary_output = bool(parameters.get("binary_data", binary_output))
    request_id = header.get("id")
    return InferRequest(np.ascontiguousarray(images, dtype=np.float32), None if request_id is None else str(request_id),
                        binary_output)


def infer_response(manifest: Manifest, outputs: np.ndarray, request: InferRequest) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON data, or a JSON header followed by raw little-endian FP32."""
    if not np.isfinite(outputs).all():
        raise ApiError(500, "non_finite_output", f"model {manifest.name!r} produced NaN or infinite outputs; "
                       "they cannot be sent as JSON numbers")
    tensor: dict[str, Any] = {"name": manifest.output.name, "datatype": DATATYPE, "shape": list(outputs.shape)}
    document: dict[str, Any] = {"model_name": manifest.name, "model_version": manifest.version}
    if request.request_id is not None:
        document["id"] = request.request_id
    document["outputs"] = [tensor]
    if not request.binary_output:
        tensor["data"] = outputs.astype(np.float32, copy=False).ravel().tolist()
        return dumps(document), {"Content-Type": "application/json"}
    raw = np.ascontiguousarray(outputs, dtype="<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    head = dumps(document)
    return head + raw, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
