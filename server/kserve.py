"""KServe v2 / Open Inference Protocol tensors: parse infer requests (JSON or binary extension), build answers.

Requests are read as strictly as the protocol and Triton's binary tensor extension are written: ``parameters``
are JSON objects and the flags in them booleans, FP32 data are JSON numbers within FP32's range (flat, or nested
exactly as the shape), binary tensors fill exactly the bytes after the JSON header, and
Inference-Header-Content-Length is a decimal byte count. Every violation is a 400 ``invalid_tensor`` whose
detail names the field. A JSON null stands for an absent optional field (MLServer's clients send them).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from model_store.manifest import Manifest, ModelKind
from server import costs
from server.domain_errors import InvalidInput, ModelBroken, TooLarge
from server.responses import OPTIONS, dumps

HEADER_LENGTH = "inference-header-content-length"
DATATYPE = "FP32"
FP32_BYTES = 4
FP32_OVERFLOW = 2.0**128 - 2.0**103  # the smallest magnitude that rounds to infinity in FP32
MAX_HEADER_DIGITS = 19  # an int64 byte count
SHOWN_CHARS = 40
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}  # by --backend
SERVER_METADATA = {"name": "occlusion-serve", "version": "2", "extensions": ["binary_tensor_data"]}
ANSWER_HEAD_BYTES = 256  # an answer's JSON apart from its data and names: keys, datatype, shape, binary size


def bad(detail: str) -> InvalidInput:
    """The ``invalid_tensor`` refusal, its detail naming the field that is wrong."""
    return InvalidInput("invalid_tensor", detail)


class _NotJson:
    """What the parser reads for NaN, Infinity or -Infinity: Python accepts these tokens, JSON has no such number."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return self.token


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def _show(value: Any) -> str:
    """A JSON value as an error names it: its kind and its (shortened) text."""
    if isinstance(value, _NotJson):
        return f"{value.token}, which is not a JSON number"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return f"an object of {len(value)} key{'' if len(value) == 1 else 's'}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {_short(json.dumps(value))}"
    if isinstance(value, float) and not math.isfinite(value):
        return "a number beyond ±1.8e308"
    return f"the number {_short(str(value))}"


def unknown_name(path: str, kind: str, value: Any, expected: str) -> InvalidInput:
    """The 400 for a tensor name other than the model's."""
    if isinstance(value, str):
        return bad(f"'{path}': {kind} {_short(value)!r} is unknown; this model's {kind} is {expected!r}")
    return bad(f"'{path}' must be the string {expected!r}, got {_show(value)}")


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


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary section after it (a view of the body: no copy)."""
    if header_length is None:
        return body, memoryview(b"")
    if not (header_length.isascii() and header_length.isdigit()):  # str.isdigit() alone accepts '²', int() does not
        raise bad(f"Inference-Header-Content-Length {_short(header_length)!r} must be a decimal byte count "
                   "(digits 0-9 only)")
    if len(header_length) > MAX_HEADER_DIGITS or int(header_length) > len(body):
        raise bad(f"Inference-Header-Content-Length {_short(header_length)} is more than the body's {len(body)} bytes")
    return body[:int(header_length)], memoryview(body)[int(header_length):]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        key = next(key for key, times in Counter(key for key, _ in pairs).items() if times > 1)
        raise bad(f"the key {_short(key)!r} appears more than once in one JSON object; send each field once")
    return document


def _integer_or_infinite(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:  # more digits than int() reads: far beyond any FP32 or int64 value
        return -math.inf if text.startswith("-") else math.inf


def _read_json(text: bytes) -> tuple[Any, list[_NotJson]]:
    """The parsed JSON header, and the NaN and Infinity tokens it held (kept as ``_NotJson`` in place)."""
    tokens: list[_NotJson] = []

    def constant(token: str) -> _NotJson:
        tokens.append(_NotJson(token))
        return tokens[-1]

    def parse(parse_int: Any) -> Any:
        return json.loads(text, parse_constant=constant, parse_int=parse_int, object_pairs_hook=_unique_keys)

    try:
        try:
            return parse(None), tokens
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
                raise
            tokens.clear()  # an integer with more digits than int() reads: read it as infinite, where it is
            return parse(_integer_or_infinite), tokens
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad("the request's JSON is nested too deeply") from None


def _path_of(document: Any, target: Any) -> str:
    """Where ``target`` sits in the document, as ``key[0].key``."""
    stack: list[tuple[str, Any]] = [("", document)]  # not recursive: the document may be nested deeply
    while stack:
        path, value = stack.pop()
        if value is target:
            return path
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}" if path else key, item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return "?"


def _parameters(value: Any, path: str) -> dict[str, Any]:
    """A ``parameters`` object; ``{}`` when absent. Keys this server does not read may hold anything."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"'{path}' must be a JSON object of key/value pairs, got {_show(value)}")
    return value


def _flag(parameters: dict[str, Any], key: str, path: str, default: bool) -> bool:
    if key not in parameters:
        return default
    if not isinstance(parameters[key], bool):
        raise bad(f"'{path}.{key}' must be a boolean (true or false), got {_show(parameters[key])}")
    return parameters[key]


def _request_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # numbered requests: echoed as their decimal text
        return str(value)
    raise bad(f"'id' must be a string, got {_show(value)}")


def check_shape(shape: Any, manifest: Manifest) -> tuple[int, ...]:
    """The input shape as a tuple: four positive integers that fit the model's (-1 = any); 400 otherwise."""
    expected, _ = manifest.tensor_shapes()
    if not isinstance(shape, list) or len(shape) != 4 or not all(type(d) is int and d > 0 for d in shape):
        shown = _show(shape)
        if isinstance(shape, list):
            dims = ", ".join(str(d) if type(d) is int else _show(d) for d in shape[:6])
            shown = f"[{dims}{', ...' if len(shape) > 6 else ''}]"
        raise bad(f"'inputs[0].shape' {shown} must be four positive integers {expected} "
                   "(batch, channels, height, width)")
    if any(e not in (-1, d) for e, d in zip(expected, shape, strict=True)):
        raise bad(f"'inputs[0].shape' {shape} does not fit the model's {expected} (-1 = any)")
    return tuple(shape)


def _index_path(index: int, dims: tuple[int, ...]) -> str:
    """``[i][j]...`` of the row-major ``index`` into an array of shape ``dims``."""
    indices = []
    for dim in reversed(dims):
        index, position = divmod(index, dim)
        indices.append(position)
    return "".join(f"[{i}]" for i in reversed(indices))


def _nested_elements(data: list[Any], shape: tuple[int, ...], path: str) -> list[Any]:
    """The elements of data nested as ``shape``, row-major; 400 at the first array that does not fit."""
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        for index, item in enumerate(level):
            if not isinstance(item, list) or len(item) != size:
                raise bad(f"'{path}{_index_path(index, shape[:depth])}' is {_show(item)} but shape {list(shape)} "
                           f"nests an array of {size} there; send data flat or nested exactly as the shape")
        level = list(chain.from_iterable(level))
    return level


def _json_data(data: Any, shape: tuple[int, ...], path: str) -> np.ndarray:
    """FP32 data from JSON: numbers within FP32's range, flat or nested exactly as the shape."""
    count = math.prod(shape)  # Python integers: a huge declared shape cannot overflow into a small count
    if not isinstance(data, list):
        raise bad(f"'{path}' must be an array of numbers (flat row-major, or nested as the shape), got {_show(data)}")
    if data and isinstance(data[0], list):
        elements = _nested_elements(data, shape, path)
    elif len(data) != count:
        raise bad(f"'{path}' does not match the shape: input data holds {len(data)} values; "
                   f"shape {list(shape)} needs {count}")
    else:
        elements = data
    if not set(map(type, elements)) <= {int, float}:
        tokens = [i for i, value in enumerate(elements) if isinstance(value, _NotJson)]
        if tokens:
            raise bad(f"'{path}' holds {len(tokens)} NaN or infinite values (element {tokens[0]} is "
                       f"{elements[tokens[0]].token}, which JSON has no number for); send finite FP32 numbers")
        index = next(i for i, value in enumerate(elements) if type(value) not in (int, float))
        raise bad(f"'{path}' element {index} (row-major) is {_show(elements[index])}; FP32 data must be JSON numbers")
    try:
        with np.errstate(over="ignore"):
            values = np.array(elements, dtype=np.float32)
        fits = bool(np.isfinite(values).all())
    except OverflowError:  # an integer beyond float64
        fits = False
    if not fits:
        index = next(i for i, value in enumerate(elements) if not abs(value) < FP32_OVERFLOW)
        raise bad(f"'{path}' element {index} (row-major) is {_show(elements[index])}, outside the FP32 range "
                   "(±3.4028235e+38)")
    return values.reshape(shape)


def _input_tensor(spec: dict[str, Any], binary: memoryview | None, manifest: Manifest) -> tuple[np.ndarray, int]:
    """The input batch and how many bytes of the binary section it took (``binary`` None: no header was sent)."""
    shape = check_shape(spec.get("shape"), manifest)
    if spec.get("datatype") != DATATYPE:
        raise bad(f"'inputs[0].datatype' is {_show(spec.get('datatype'))}, which is not supported; send {DATATYPE}")
    count = math.prod(shape)
    parameters = _parameters(spec.get("parameters"), "inputs[0].parameters")
    if "binary_data_size" not in parameters:
        if spec.get("data") is None:
            raise bad("'inputs[0].data' is missing: send the tensor as JSON data, or as binary data with a "
                       "binary_data_size parameter")
        return _json_data(spec["data"], shape, "inputs[0].data"), 0
    field, size = "'inputs[0].parameters.binary_data_size'", parameters["binary_data_size"]
    if spec.get("data") is not None:
        raise bad(f"'inputs[0].data' and {field} are both given; send the tensor either as JSON data or as binary")
    if type(size) is not int or size < 0:
        raise bad(f"{field} must be a byte count (a non-negative integer), got {_show(size)}")
    if size != count * FP32_BYTES:
        raise bad(f"{field} does not match the tensor: binary_data_size {size}, but shape {list(shape)} of FP32 is "
                   f"{count * FP32_BYTES} bytes")
    if binary is None:
        raise bad(f"{field} is {size} but the request has no Inference-Header-Content-Length header, so no binary "
                   "data follows its JSON")
    if size > len(binary):
        raise bad(f"{field} is {size} but only {len(binary)} bytes follow the JSON header")
    images = np.frombuffer(binary, dtype="<f4", count=count).reshape(shape)
    if not np.isfinite(images).all():
        raise bad(f"the binary data of 'inputs[0]' holds {int(np.count_nonzero(~np.isfinite(images)))} NaN or "
                   "infinite values; send finite FP32 numbers")
    return images, size


def _binary_output(outputs: Any, manifest: Manifest, default: bool) -> bool:
    """Whether the requested output goes back as binary; 400 for outputs this model does not have."""
    if outputs is None:
        return default
    if not isinstance(outputs, list):
        raise bad(f"'outputs' must be an array of objects with a 'name', got {_show(outputs)}")
    binary_output, name = default, manifest.output.name
    for index, requested in enumerate(outputs):
        path = f"outputs[{index}]"
        if not isinstance(requested, dict):
            raise bad(f"'{path}' must be a JSON object with a 'name', got {_show(requested)}")
        if requested.get("name") != name:
            raise unknown_name(f"{path}.name", "output", requested.get("name"), name)
        if index > 0:
            raise bad(f"'{path}.name' asks for output {name!r} again; request each output once")
        parameters = _parameters(requested.get("parameters"), f"{path}.parameters")
        if parameters.get("classification"):
            raise bad(f"'{path}.parameters.classification': the classification extension is not supported; "
                       "read the logits output")
        binary_output = _flag(parameters, "binary_data", f"{path}.parameters", binary_output)
    return binary_output


def parse_infer_request(body: bytes, header_length: str | None, manifest: Manifest) -> InferRequest:
    """Validate a v2 infer request for this model; 400 ``invalid_tensor`` names the field that is wrong."""
    json_part, binary = _split_body(body, header_length)
    header, tokens = _read_json(json_part)
    if not isinstance(header, dict):
        raise bad("the request must be a JSON object with an 'inputs' list")
    request_id = _request_id(header.get("id"))
    binary_output = _flag(_parameters(header.get("parameters"), "parameters"), "binary_data_output", "parameters",
                          False)
    inputs = header.get("inputs")
    name = manifest.input.name
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad(f"'inputs' must be a list with exactly one tensor named {name!r}")
    if inputs[0].get("name") != name:
        raise unknown_name("inputs[0].name", "input", inputs[0].get("name"), name)
    images, used = _input_tensor(inputs[0], None if header_length is None else binary, manifest)
    if used != len(binary):
        raise bad(f"{len(binary)} bytes follow the JSON header (Inference-Header-Content-Length {len(json_part)}) "
                   f"but the inputs' binary_data_size parameters add up to {used}; the body must end with the last "
                   "binary tensor")
    binary_output = _binary_output(header.get("outputs"), manifest, binary_output)
    if tokens:  # in a field this server does not read
        raise bad(f"'{_path_of(header, tokens[0])}' is {tokens[0].token}, which is not a JSON number (JSON has no NaN "
                   "or Infinity); send finite numbers")
    return InferRequest(np.ascontiguousarray(images, dtype=np.float32), request_id, binary_output)


def infer_response(manifest: Manifest, outputs: np.ndarray, request: InferRequest) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON data, or a JSON header followed by raw little-endian FP32."""
    if not np.isfinite(outputs).all():
        raise ModelBroken("non_finite_output", f"model {manifest.name!r} produced NaN or infinite outputs; "
                          "they cannot be sent as JSON numbers")
    tensor: dict[str, Any] = {"name": manifest.output.name, "datatype": DATATYPE, "shape": list(outputs.shape)}
    document: dict[str, Any] = {"model_name": manifest.name, "model_version": manifest.version}
    if request.request_id is not None:
        document["id"] = request.request_id
    document["outputs"] = [tensor]
    if not request.binary_output:  # orjson writes the float32 array itself: no Python float per element
        tensor["data"] = np.ascontiguousarray(outputs, dtype=np.float32).ravel()
        return orjson.dumps(document, option=OPTIONS | orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": "application/json"}
    raw = np.ascontiguousarray(outputs, dtype="<f4")
    tensor["parameters"] = {"binary_data_size": raw.nbytes}
    head = dumps(document)
    return b"".join((head, raw.data)), {"Content-Type": "application/octet-stream",
                                        "Inference-Header-Content-Length": str(len(head))}


def output_shape(manifest: Manifest, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output's shape for an input of this (n, 3, H, W) shape: the manifest's, its -1s filled in."""
    batch, _, height, width = input_shape
    _, expected = manifest.tensor_shapes()
    if manifest.kind is ModelKind.SEGMENTER:
        return batch, expected[1], height, width
    return batch, expected[1]


def answer_bytes(manifest: Manifest, input_shape: tuple[int, ...], binary: bool, request_id: str | None) -> int:
    """The most bytes the answer to an input of this shape can take, before the model runs (JSON: every float32 at
    its longest, ``costs.V2_JSON_ANSWER_BYTES``)."""
    elements = math.prod(output_shape(manifest, input_shape))
    head = ANSWER_HEAD_BYTES + len(manifest.name) + len(manifest.version) + len(manifest.output.name)
    head += 6 * len(request_id or "")  # \uXXXX escapes at worst
    per_element = costs.V2_BINARY_ANSWER_BYTES if binary else costs.V2_JSON_ANSWER_BYTES
    return head + math.ceil(elements * per_element)


def parse_bytes(body_length: int, header_length: str | None) -> float:
    """Working memory parsing a v2 body takes, from its length: its JSON part is parsed into Python objects, its
    binary section is read in place."""
    json_length = body_length
    if header_length is not None and header_length.isascii() and header_length.isdigit() \
            and len(header_length) <= MAX_HEADER_DIGITS:
        json_length = min(body_length, int(header_length))
    return json_length * costs.V2_JSON_PARSE_BYTES


def run_bytes(manifest: Manifest, input_shape: tuple[int, ...], binary: bool, max_batch: int) -> float:
    """Working memory from a parsed input of this shape to its answer: the input and its batch, the model run on
    at most ``max_batch`` images at a time, the outputs and the answer."""
    batch, channels, height, width = input_shape
    outputs = math.prod(output_shape(manifest, input_shape))
    answer = costs.V2_BINARY_ANSWER_BYTES if binary else costs.V2_JSON_ANSWER_BYTES
    return (batch * channels * height * width * costs.V2_TENSOR_BYTES
            + min(batch, max_batch) * height * width * costs.V2_INFERENCE_BYTES
            + outputs * (costs.V2_OUTPUT_BYTES + answer))


def check_limits(manifest: Manifest, parsed: InferRequest, max_pixels: int, max_response_bytes: int) -> None:
    """TooLarge for an input whose images pass the pixel limit, or whose answer would pass the response limit."""
    _, _, height, width = parsed.images.shape
    if height * width > max_pixels:
        raise TooLarge("tensor_too_large", f"'inputs[0].shape' {list(parsed.images.shape)} holds images of "
                       f"{height}x{width} = {height * width:,} pixels; the limit is {max_pixels:,} (--max-pixels)")
    size = answer_bytes(manifest, parsed.images.shape, parsed.binary_output, parsed.request_id)
    if size > max_response_bytes:
        shape = list(output_shape(manifest, parsed.images.shape))
        form = "binary" if parsed.binary_output else "JSON (send binary_data_output to shrink it four times)"
        raise TooLarge("response_too_large", f"the answer, output {shape} as {form}, could take {size:,} "
                       f"bytes; the limit is {max_response_bytes:,} (--max-response-bytes): send fewer or smaller "
                       "images")
