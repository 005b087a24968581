"""KServe v2 / Open Inference Protocol messages over gRPC: infer requests read as strictly as the HTTP route
reads its JSON (``server.kserve``), answers with ``raw_output_contents``, and every HTTP error mapped to its gRPC
status.

An input arrives either as ``raw_input_contents`` (what ``tritonclient.grpc`` sends: little-endian FP32, row-major)
or as ``contents.fp32_contents``; never both. The answer always carries its output as raw bytes, as Triton's does.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from model_store.manifest import Manifest
from server.errors import ApiError
from server.kserve import DATATYPE, FP32_BYTES, InferRequest, bad, check_shape, unknown_name

# Statuses by HTTP status; a few short codes read differently (shedding can be retried, a bad size cannot).
GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
GRPC_STATUS_BY_CODE = {
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_many_requests": grpc.StatusCode.RESOURCE_EXHAUSTED,
}
TYPED_CONTENTS = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
                  "fp64_contents", "bytes_contents")


def grpc_status(error: ApiError) -> grpc.StatusCode:
    """The gRPC status for an error the HTTP routes would answer with ``error.status_code``."""
    return GRPC_STATUS_BY_CODE.get(error.code) or GRPC_STATUS.get(error.status_code, grpc.StatusCode.UNKNOWN)


def _requested_outputs(request: pb.ModelInferRequest, manifest: Manifest) -> None:
    name = manifest.output.name
    for index, requested in enumerate(request.outputs):
        path = f"outputs[{index}]"
        if requested.name != name:
            raise unknown_name(f"{path}.name", "output", requested.name, name)
        if index > 0:
            raise bad(f"'{path}.name' asks for output {name!r} again; request each output once")
        if "classification" in requested.parameters:
            raise bad(f"'{path}.parameters.classification': the classification extension is not supported; "
                      "read the logits output")


def _tensor_data(request: pb.ModelInferRequest, tensor: Any, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)  # Python integers: a huge declared shape cannot overflow into a small count
    contents = tensor.contents
    typed = [field for field in TYPED_CONTENTS if len(getattr(contents, field))]
    if typed:
        raise bad(f"'inputs[0].contents.{typed[0]}' holds the data, but the input is {DATATYPE}; send "
                  "fp32_contents or raw_input_contents")
    if request.raw_input_contents:
        if len(contents.fp32_contents):
            raise bad("'inputs[0].contents' and 'raw_input_contents' are both given; send the tensor once")
        if len(request.raw_input_contents) != 1:
            raise bad(f"'raw_input_contents' holds {len(request.raw_input_contents)} tensors; the model has one input")
        raw = request.raw_input_contents[0]
        if len(raw) != count * FP32_BYTES:
            raise bad(f"'raw_input_contents[0]' holds {len(raw)} bytes, but shape {list(shape)} of {DATATYPE} is "
                      f"{count * FP32_BYTES} bytes")
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    values = contents.fp32_contents
    if len(values) != count:
        raise bad(f"'inputs[0].contents.fp32_contents' holds {len(values)} values; shape {list(shape)} needs {count}"
                  if len(values) else "'inputs[0]' carries no data: send raw_input_contents or contents.fp32_contents")
    return np.fromiter(values, dtype=np.float32, count=count).reshape(shape)


def parse_grpc_request(request: pb.ModelInferRequest, manifest: Manifest) -> InferRequest:
    """Validate a gRPC infer request for this model: 400 ``invalid_tensor`` names the field that is wrong."""
    name = manifest.input.name
    if len(request.inputs) != 1:
        raise bad(f"'inputs' must be a list with exactly one tensor named {name!r}")
    tensor = request.inputs[0]
    if tensor.name != name:
        raise unknown_name("inputs[0].name", "input", tensor.name, name)
    if tensor.datatype != DATATYPE:
        raise bad(f"'inputs[0].datatype' is {tensor.datatype[:40]!r}, which is not supported; send {DATATYPE}")
    shape = check_shape(list(tensor.shape), manifest)
    _requested_outputs(request, manifest)
    images = _tensor_data(request, tensor, shape)
    if not np.isfinite(images).all():
        raise bad(f"the data of 'inputs[0]' holds {int(np.count_nonzero(~np.isfinite(images)))} NaN or infinite "
                  "values; send finite FP32 numbers")
    return InferRequest(np.ascontiguousarray(images, dtype=np.float32), request.id or None, True)


def grpc_response(manifest: Manifest, outputs: np.ndarray, request_id: str | None) -> pb.ModelInferResponse:
    """The infer answer: the output's name, datatype and shape, and its little-endian FP32 bytes."""
    if not np.isfinite(outputs).all():
        raise ApiError(500, "non_finite_output", f"model {manifest.name!r} produced NaN or infinite outputs")
    raw = np.ascontiguousarray(outputs, dtype="<f4")
    tensor = pb.ModelInferResponse.InferOutputTensor(name=manifest.output.name, datatype=DATATYPE,
                                                     shape=list(raw.shape))
    return pb.ModelInferResponse(model_name=manifest.name, model_version=manifest.version, id=request_id or "",
                                 outputs=[tensor], raw_output_contents=[raw.tobytes()])


def grpc_metadata(document: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The v2 model metadata document (``server.kserve.model_metadata``) as its gRPC message."""
    def tensors(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in items]

    return pb.ModelMetadataResponse(name=document["name"], versions=document["versions"],
                                    platform=document["platform"], inputs=tensors(document["inputs"]),
                                    outputs=tensors(document["outputs"]))
