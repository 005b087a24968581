"""KServe v2 request parsing (JSON and binary extension) and the JSON error handlers, in process."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_store.manifest import Manifest
from server.domain_errors import ServingError
from server.errors import http_status
from server.kserve import infer_response, parse_infer_request
from server.main import create_app
from server.settings import Settings

MANIFEST = Manifest.from_json({
    "schema": 2, "name": "m", "version": "3", "task": "classification", "class_names": ["x", "y"],
    "input": {"name": "images", "size": [2, 2], "dynamic_size": False, "mean": [0, 0, 0], "std": [1, 1, 1]},
    "output": {"name": "logits"}, "files": {},
})


def test_json_request_with_flat_or_nested_data():
    values = np.arange(24, dtype=np.float32)
    for data in (values.tolist(), values.reshape(2, 3, 2, 2).tolist()):
        body = json.dumps({"id": 7, "inputs": [{"name": "images", "shape": [2, 3, 2, 2], "datatype": "FP32",
                                                "data": data}]}).encode()
        parsed = parse_infer_request(body, None, MANIFEST)
        assert parsed.images.shape == (2, 3, 2, 2) and parsed.images[1, 2, 1, 1] == 23.0
        assert parsed.request_id == "7" and parsed.binary_output is False


def test_binary_extension_request_and_response():
    values = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    header = json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 2, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 48}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    parsed = parse_infer_request(header + values.tobytes(), str(len(header)), MANIFEST)
    np.testing.assert_array_equal(parsed.images, values)
    assert parsed.binary_output
    content, headers = infer_response(MANIFEST, np.array([[1.5, -2.0]], dtype=np.float32), parsed)
    head_length = int(headers["Inference-Header-Content-Length"])
    document = json.loads(content[:head_length])
    assert document["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [1, 2],
                                      "parameters": {"binary_data_size": 8}}
    assert np.frombuffer(content[head_length:], dtype="<f4").tolist() == [1.5, -2.0]


@pytest.mark.parametrize(("request_body", "fragment"), [
    ({"inputs": []}, "exactly one tensor named 'images'"),
    ({"inputs": [{"name": "images", "shape": [1, 3, 2], "datatype": "FP32", "data": []}]}, "four positive integers"),
    ({"inputs": [{"name": "images", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": ["a"] * 12}]}, "numbers"),
    ({"inputs": [{"name": "images", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0] * 12}],
      "outputs": [{"name": "probs"}]}, "output 'probs' is unknown"),
    ({"inputs": [{"name": "images", "shape": [1, 3, 2, 2], "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}]}, "binary_data_size 4"),
    ({"inputs": [{"name": "images", "shape": [1125899906842624, 3, 2, 2], "datatype": "FP32", "data": []}]},
     "input data holds 0 values; shape [1125899906842624, 3, 2, 2] needs 13510798882111488"),
    ({"inputs": [{"name": "images", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [float("nan")] + [0] * 11}]},
     "1 NaN or infinite values"),
])
def test_bad_requests_say_what_is_wrong(request_body, fragment):
    with pytest.raises(ServingError) as info:
        parse_infer_request(json.dumps(request_body).encode(), None, MANIFEST)
    assert http_status(info.value) == 400 and info.value.code == "invalid_tensor"
    assert fragment in str(info.value.detail)


def test_deeply_nested_json_is_a_400_not_a_crash():
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ServingError) as info:
        parse_infer_request(body, None, MANIFEST)
    assert http_status(info.value) == 400 and "nested too deeply" in str(info.value.detail)


def test_non_finite_outputs_are_never_sent_as_json():
    parsed = parse_infer_request(json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 2, 2], "datatype": "FP32",
                                                         "data": [0] * 12}]}).encode(), None, MANIFEST)
    with pytest.raises(ServingError) as info:
        infer_response(MANIFEST, np.array([[np.nan, 1.0]], dtype=np.float32), parsed)
    assert http_status(info.value) == 500 and info.value.code == "non_finite_output"


def test_unexpected_errors_are_a_json_500_without_traceback(caplog):
    settings = Settings()
    app = create_app(settings, manifests={})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal state")

    with caplog.at_level(logging.ERROR, logger="server.errors"):
        response = TestClient(app, base_url="http://localhost", raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error" and "secret" not in response.text
    prefix = "the server hit an unexpected error; it has been logged as error id "
    assert body["detail"].startswith(prefix) and len(error_id := body["detail"].removeprefix(prefix)) == 12
    logged = [record for record in caplog.records if record.exc_info]
    assert any("secret internal state" in str(r.exc_info[1]) and error_id in r.getMessage() for r in logged)
