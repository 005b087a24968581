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
from server import domain_errors as de
from server.kserve import DATATYPE, FP32_BYTES, InferRequest, bad, check_shape, unknown_name

# The gRPC status of each kind of serving error (the first of an error's classes found here).
GRPC_STATUS: dict[type[de.ServingError], grpc.StatusCode] = {
    de.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    de.NotFound: grpc.StatusCode.NOT_FOUND,
    de.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    de.InvalidParameter: grpc.StatusCode.INVALID_ARGUMENT,
    de.TooLarge: grpc.StatusCode.INVALID_ARGUMENT,  # no wait makes it fit; RESOURCE_EXHAUSTED invites retries
    de.Shed: grpc.StatusCode.RESOURCE_EXHAUSTED,
    de.Unavailable: grpc.StatusCode.UNAVAILABLE,
    de.ModelBroken: grpc.StatusCode.INTERNAL,
    de.PastDeadline: grpc.StatusCode.DEADLINE_EXCEEDED,
    de.Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    de.LoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    de.ClientGone: grpc.StatusCode.CANCELLED,
}
TYPED_CONTENTS = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
                  "fp64_contents", "bytes_contents")


def grpc_status(error: de.ServingError) -> grpc.StatusCode:
    """The gRPC status a serving error is answered with."""
    return next(GRPC_STATUS[kind] for kind in type(error).__mro__ if kind in GRPC_STATUS)


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
        raise de.ModelBroken("non_finite_output", f"model {manifest.name!r} produced NaN or infinite outputs")
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
