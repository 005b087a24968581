"""KServe v2 infer requests checked as strictly as the spec and Triton's binary tensor extension read, on a live
server: every hostile body is a one-line 400 ``invalid_tensor`` that names the field, never a 5xx or a wrong 200."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.server.conftest import SEGMENTER

URL = f"/v2/models/{SEGMENTER}/infer"  # dynamic size: small 32 px tensors keep the bodies small
SHAPE = [1, 3, 32, 32]
COUNT = 3 * 32 * 32
SIZE = COUNT * 4  # bytes of the FP32 tensor
DROP = object()  # a field value that removes the field


def request(input_fields: dict | None = None, output: dict | None = None, **top) -> dict:
    """A valid JSON infer request for the segmenter, with ``input_fields`` replacing (or dropping) input fields."""
    tensor = {"name": "images", "shape": SHAPE, "datatype": "FP32", "data": [0.5] * COUNT, **(input_fields or {})}
    document = {"inputs": [{k: v for k, v in tensor.items() if v is not DROP}], **top}
    if output is not None:
        document["outputs"] = [{"name": "logits", **output}]
    return document


def binary_request(input_parameters: dict | None = None, **top) -> dict:
    """The JSON header of a binary-extension request whose input is sent as SIZE raw bytes."""
    return request({"data": DROP, "parameters": {"binary_data_size": SIZE, **(input_parameters or {})}}, **top)


def post_binary(client: httpx.Client, header: dict | bytes, payload: bytes, length: str | bytes | None = None):
    """POST a JSON header and raw bytes; ``length`` overrides Inference-Header-Content-Length."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(len(head)) if length is None else length}
    return client.post(URL, content=head + payload, headers=headers)


def post_text(client: httpx.Client, text: str) -> httpx.Response:
    """POST a JSON body as written (for tokens and numbers json.dumps would not write)."""
    return client.post(URL, content=text.encode(), headers={"Content-Type": "application/json"})


def assert_rejected(response: httpx.Response, *fragments: str) -> str:
    """A 400 ``invalid_tensor`` whose one-line detail holds every fragment; the detail."""
    assert response.status_code == 400, response.text[:500]
    answer = response.json()
    assert set(answer) == {"error", "detail"} and answer["error"] == "invalid_tensor", answer
    detail = answer["detail"]
    assert "\n" not in detail and all(fragment in detail for fragment in fragments), detail
    return detail


PAYLOAD = np.full(COUNT, 0.25, dtype="<f4").tobytes()
NOT_OBJECTS = [[], ["binary_data_output"], "binary_data_output", 1, 2.5, True, False]


def test_the_happy_paths_still_answer(client):
    """Flat and nested JSON data, integers as numbers, numbered ids, nulls for the optional fields (as MLServer's
    clients send them), an output flag overriding the request's, and a binary tensor of exactly its size."""
    nested = np.full(SHAPE, 0.5).tolist()
    cases = [(request(), None), (request({"data": nested}), None), (request({"data": [0] * COUNT}, id="x"), "x"),
             (request(id=7), "7"), (request({"parameters": None}, id=None, parameters=None, outputs=None), None),
             (request(output={"parameters": {"binary_data": False}}, parameters={"binary_data_output": True}), None)]
    answers = []
    for document, request_id in cases:
        response = client.post(URL, json=document)
        assert response.status_code == 200, response.text
        answers.append(response.json())
        assert answers[-1]["outputs"][0]["name"] == "logits" and answers[-1].get("id") == request_id
    assert answers[0]["outputs"] == answers[1]["outputs"]  # nested data is the same tensor as flat data
    response = post_binary(client, binary_request(parameters={"binary_data_output": True}), PAYLOAD)
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    (output,) = json.loads(response.content[:length])["outputs"]
    assert output["parameters"]["binary_data_size"] == len(response.content) - length == 4 * np.prod(output["shape"])


@pytest.mark.parametrize("value", NOT_OBJECTS)
def test_non_object_parameters_at_the_top_are_400(client, value):
    assert_rejected(client.post(URL, json=request(parameters=value)), "'parameters'", "JSON object")


@pytest.mark.parametrize("value", NOT_OBJECTS)
def test_non_object_parameters_of_an_input_are_400(client, value):
    assert_rejected(client.post(URL, json=request({"parameters": value})), "'inputs[0].parameters'", "JSON object")


@pytest.mark.parametrize("value", NOT_OBJECTS)
def test_non_object_parameters_of_an_output_are_400(client, value):
    assert_rejected(client.post(URL, json=request(output={"parameters": value})), "'outputs[0].parameters'",
                    "JSON object")


@pytest.mark.parametrize(("document", "field"), [
    (request(parameters={"binary_data_output": "false"}), "'parameters.binary_data_output'"),
    (request(parameters={"binary_data_output": 1}), "'parameters.binary_data_output'"),
    (request(output={"parameters": {"binary_data": "true"}}), "'outputs[0].parameters.binary_data'"),
    (request(output={"parameters": {"binary_data": 0}}), "'outputs[0].parameters.binary_data'"),
])
def test_binary_output_flags_must_be_booleans(client, document, field):
    assert_rejected(client.post(URL, json=document), field, "boolean")


@pytest.mark.parametrize("length", [
    b"\xb2",  # superscript two: str.isdigit() says yes, int() says no
    "9" * 5000,  # more digits than int() converts
    "99999999999999999999999",
    "0x20", "-1", "+12", "1e3", "12.0", "12,5", "",
])
def test_inference_header_content_length_must_be_a_decimal_byte_count(client, length):
    assert_rejected(post_binary(client, binary_request(), PAYLOAD, length), "Inference-Header-Content-Length")


def test_inference_header_content_length_past_the_body_is_400(client):
    head = json.dumps(binary_request()).encode()
    assert_rejected(post_binary(client, head, PAYLOAD, str(len(head) + SIZE + 1)), "Inference-Header-Content-Length",
                    f"{len(head) + SIZE} bytes")


@pytest.mark.parametrize(("payload", "fragments"), [
    (PAYLOAD[:-4], ("'inputs[0].parameters.binary_data_size'", f"{SIZE - 4} bytes follow")),
    (PAYLOAD[:-1], ("'inputs[0].parameters.binary_data_size'", f"{SIZE - 1} bytes follow")),
    (b"", ("'inputs[0].parameters.binary_data_size'", "0 bytes follow")),
    (PAYLOAD + b"\0", ("Inference-Header-Content-Length", f"{SIZE + 1} bytes", f"add up to {SIZE}")),
    (PAYLOAD + PAYLOAD, ("Inference-Header-Content-Length", f"{2 * SIZE} bytes", f"add up to {SIZE}")),
])
def test_binary_sections_must_add_up_exactly(client, payload, fragments):
    assert_rejected(post_binary(client, binary_request(), payload), *fragments)


def test_bytes_after_a_json_only_request_are_400(client):
    assert_rejected(post_binary(client, request(), b"\0" * 8), "Inference-Header-Content-Length", "8 bytes",
                    "add up to 0")


def test_binary_data_size_without_the_header_is_400(client):
    assert_rejected(client.post(URL, json=binary_request()), "'inputs[0].parameters.binary_data_size'",
                    "Inference-Header-Content-Length")


@pytest.mark.parametrize("size", [str(SIZE), float(SIZE), True, -4, None, SIZE - 4, SIZE + 4, [SIZE], {"n": SIZE}])
def test_binary_data_size_must_be_the_tensors_byte_count(client, size):
    assert_rejected(post_binary(client, binary_request({"binary_data_size": size}), PAYLOAD),
                    "'inputs[0].parameters.binary_data_size'")


def test_data_and_binary_data_size_together_are_400(client):
    header = binary_request()
    header["inputs"][0]["data"] = [0.5] * COUNT
    assert_rejected(post_binary(client, header, PAYLOAD), "'inputs[0].data'", "binary_data_size")


@pytest.mark.parametrize("element", ["1.5", "", True, False, None, {"value": 1.5}, [1.5], [], 1e39, -1e39, 10 ** 400])
def test_every_element_must_be_an_fp32_number(client, element):
    data = [0.5] * COUNT
    data[5] = element
    assert_rejected(client.post(URL, json=request({"data": data})), "'inputs[0].data'", "element 5")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_not_json_numbers(client, token):
    body = json.dumps(request()).replace("0.5", token, 1)
    assert_rejected(post_text(client, body), "'inputs[0].data'", "NaN or infinite")


@pytest.mark.parametrize(("top", "field"), [
    ({"parameters": {"binary_data_output": float("nan")}}, "'parameters.binary_data_output'"),
    ({"id": float("inf")}, "'id'"),
    ({"parameters": {"unknown": float("nan")}}, "'parameters.unknown'"),
    ({"extra": [{"deep": [1, float("-inf")]}]}, "'extra[0].deep[1]'"),
])
def test_nan_and_infinity_tokens_elsewhere_are_400(client, top, field):
    assert_rejected(post_text(client, json.dumps(request(**top))), field)


def test_numbers_too_long_to_read_are_400(client):
    body = json.dumps(request()).replace("0.5", "1" * 5000, 1)
    assert_rejected(post_text(client, body), "'inputs[0].data'", "element 0", "FP32 range")


@pytest.mark.parametrize(("data", "fragments"), [
    ([[0.5] * (COUNT // 2)] * 2, ("'inputs[0].data'", "shape [1, 3, 32, 32]", "2 items")),
    ([np.full(SHAPE, 0.5).tolist()], ("'inputs[0].data[0]'", "1 item", "array of 3")),
    ([np.full(SHAPE[1:], 0.5).tolist()[:2]], ("'inputs[0].data[0]'", "2 items", "array of 3")),
    ([[[[0.5] * 32] * 32] * 2 + [[[0.5] * 31] + [[0.5] * 32] * 31]], ("'inputs[0].data[0][2][0]'", "31 items")),
    ([[[[0.5] * 32] * 32] * 3 + [0.5]], ("'inputs[0].data[0]'", "4 items")),
    ([[[[0.5] * 32] * 32] * 2 + [0.5]], ("'inputs[0].data[0][2]'", "number")),
    ([0.5] * (COUNT - 1) + [[0.5]], ("'inputs[0].data'", f"element {COUNT - 1}", "array")),
    ([0.5] * (COUNT + 1), ("'inputs[0].data'", f"holds {COUNT + 1} values", f"needs {COUNT}")),
    ("0.5", ("'inputs[0].data'", "array")),
    (0.5, ("'inputs[0].data'", "array")),
    ({"values": [0.5] * COUNT}, ("'inputs[0].data'", "array")),
])
def test_nested_data_must_follow_the_shape(client, data, fragments):
    assert_rejected(client.post(URL, json=request({"data": data})), *fragments)


@pytest.mark.parametrize(("fields", "field"), [
    ({"shape": [True, 3, 32, 32]}, "'inputs[0].shape' [the boolean true, 3, 32, 32]"),
    ({"shape": [1.0, 3, 32, 32]}, "'inputs[0].shape' [the number 1.0, 3, 32, 32]"),
    ({"shape": [1, 3, 32, 32, 1]}, "'inputs[0].shape'"),
    ({"shape": "1,3,32,32"}, "'inputs[0].shape'"),
    ({"name": ["images"]}, "'inputs[0].name'"),
    ({"datatype": "fp32"}, "'inputs[0].datatype'"),
    ({"datatype": None}, "'inputs[0].datatype'"),
    ({"data": DROP}, "'inputs[0].data'"),
])
def test_input_fields_of_the_wrong_kind_are_400(client, fields, field):
    assert_rejected(client.post(URL, json=request(fields)), field)


@pytest.mark.parametrize(("document", "field"), [
    (request(id={"request": 1}), "'id'"),
    (request(id=[1]), "'id'"),
    (request(id=True), "'id'"),
    (request(outputs={"name": "logits"}), "'outputs'"),
    (request(outputs=[{"name": "logits"}, {"name": "logits"}]), "'outputs[1].name'"),
    (request(outputs=["logits"]), "'outputs[0]'"),
])
def test_top_level_fields_of_the_wrong_kind_are_400(client, document, field):
    assert_rejected(client.post(URL, json=document), field)


def test_duplicate_keys_are_400_not_last_one_wins(client):
    body = '{"inputs": [], ' + json.dumps(request())[1:]  # last one wins would read the valid second 'inputs'
    assert_rejected(post_text(client, body), "'inputs'", "more than once")

