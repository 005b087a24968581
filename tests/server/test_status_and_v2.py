"""Health, readiness, /models, /metrics, the index, and the KServe v2 protocol on a live server."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.http as triton
from PIL import Image

from tests.server.conftest import CLASSIFIER, IMAGENET, SEGMENTER, SEGMENTER_SIZE, SOFTMAX_CLASSIFIER
from tests.server.oracle import metric, model_input, png_bytes, random_rgb, run_exported


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True, "models": {CLASSIFIER: "ready", SOFTMAX_CLASSIFIER: "ready",
                                                                     SEGMENTER: "ready", IMAGENET: "ready"}}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200


def test_models_report_manifest_provider_and_batching(client, store):
    answer = client.get("/models").json()
    by_name = {m["name"]: m for m in answer["models"]}
    classifier = by_name[CLASSIFIER]
    manifest = json.loads((store / CLASSIFIER / "1" / "manifest.json").read_text())
    assert classifier["class_names"] == manifest["class_names"]
    assert classifier["input"] == manifest["input"]
    assert classifier["task"] == "classification" and by_name[SEGMENTER]["task"] == "segmentation"
    assert classifier["backend"] == "onnx" and classifier["provider"] == "CPUExecutionProvider"
    assert classifier["batching"] == {"max_batch": 8, "max_delay_ms": 50.0, "queue_size": 64, "workers": 1,
                                     "timeout_ms": 30000.0, "buckets": []}  # a CPU pads no batch
    assert answer["defaults"] == {"classification": CLASSIFIER, "segmentation": SEGMENTER}
    softmax = by_name[SOFTMAX_CLASSIFIER]
    assert (classifier["activation"], softmax["activation"], by_name[SEGMENTER]["activation"]) == (
        "sigmoid", "softmax", "softmax")
    assert softmax["output"]["activation"] == "softmax" and classifier["output"]["activation"] == "sigmoid"
    assert classifier["threshold"] == 0.5 and softmax["threshold"] is None  # softmax answers are top-k, not cut
    assert by_name[SEGMENTER]["threshold"] is None  # a class map is an arg-max: no threshold, as /robustness says
    assert [by_name[n]["kind"] for n in (CLASSIFIER, SOFTMAX_CLASSIFIER, SEGMENTER)] == [
        "multi-label classifier", "single-label classifier", "segmenter"]
    assert "api_key" not in answer["settings"] and answer["settings"]["api_key_required"] is False


def test_index_lists_a_curl_example_per_endpoint(client):
    endpoints = {e["endpoint"]: e["curl"] for e in client.get("/").json()["endpoints"]}
    for name in ("GET /health", "GET /ready", "GET /models", "GET /metrics", "POST /predict", "POST /segment",
                 "POST /robustness", "GET /v2/models/{m}", "POST /v2/models/{m}/infer"):
        assert name in endpoints and endpoints[name].count("curl") == 1


def test_startup_banner_prints_working_curl_examples(server):
    logs, url = server.logs(), server.url.replace("127.0.0.1", "localhost")
    assert f"occlusion-serve ready on {url}" in logs
    assert f"curl -s -F file=@photo.jpg '{url}/predict?model={CLASSIFIER}&top_k=5'" in logs


def test_openapi_documents_every_endpoint_with_examples(client):
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/segment", "/robustness", "/health", "/ready", "/models", "/metrics",
                 "/v2/health/ready", "/v2/models/{model}", "/v2/models/{model}/infer"):
        assert path in spec["paths"], path
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "image/*"}
    assert "example" in predict["responses"]["200"]["content"]["application/json"]
    assert "example" in spec["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]["content"]["application/json"]


def test_eight_concurrent_requests_are_batched(client, server):
    before = client.get("/metrics").text
    data = png_bytes(random_rgb(64, 64, seed=31))

    def call(_: int) -> dict:
        with server.client() as own:
            return own.post("/predict", content=data, headers={"Content-Type": "image/png"}).json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    after = client.get("/metrics").text
    batches_over_one = (metric(after, "batch_size_count", model=CLASSIFIER) - metric(after, "batch_size_bucket",
                        model=CLASSIFIER, le="1.0")) - (metric(before, "batch_size_count", model=CLASSIFIER)
                        - metric(before, "batch_size_bucket", model=CLASSIFIER, le="1.0"))
    assert batches_over_one >= 1
    assert max(a["timing"]["batch_size"] for a in answers) > 1
    assert len({json.dumps(a["labels"]) for a in answers}) == 1  # same image, same answer in any batch


def test_metrics_count_requests_by_route_and_status(client):
    before = metric(client.get("/metrics").text, "requests_total", route="/predict", status="404")
    client.post("/predict?model=nope", content=b"x", headers={"Content-Type": "image/png"})
    text = client.get("/metrics").text
    assert metric(text, "requests_total", route="/predict", status="404") == before + 1
    for family in ("request_latency_seconds_bucket", "queue_depth", "batches_running", "batch_size_bucket",
                   "inference_seconds_bucket"):
        assert family in text


def test_access_log_has_one_json_line_per_request(client, server):
    image = png_bytes(random_rgb(20, 20, seed=32))
    client.post("/predict?top_k=2", content=image, headers={"Content-Type": "image/png"})
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry.get("logger") == "server.access" and entry["path"] == "/predict"
              and entry["status"] == 200]
    assert access, "no access line for /predict"
    assert {"method", "path", "status", "duration_ms", "model", "batch_size"} <= set(access[-1])
    assert access[-1]["model"] == CLASSIFIER


def test_v2_model_metadata(client):
    meta = client.get(f"/v2/models/{CLASSIFIER}").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 128, 128]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"] == {"task": "classification", "activation": "sigmoid", "output_kind": "class_logits"}
    softmax = client.get(f"/v2/models/{SOFTMAX_CLASSIFIER}").json()
    assert softmax["parameters"]["activation"] == "softmax" and softmax["outputs"] == meta["outputs"]
    seg = client.get(f"/v2/models/{SEGMENTER}").json()
    classes = {m["name"]: len(m["class_names"]) for m in client.get("/models").json()["models"]}[SEGMENTER]
    assert seg["outputs"][0]["shape"][:2] == [-1, classes]
    assert seg["parameters"] == {"task": "segmentation", "activation": "softmax", "output_kind": "pixel_logits"}
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get(f"/v2/models/{CLASSIFIER}/versions/1").json() == meta
    wrong = client.get(f"/v2/models/{CLASSIFIER}/versions/7")
    assert (wrong.status_code, wrong.json()["error"]) == (404, "unknown_version")
    assert client.get(f"/v2/models/{CLASSIFIER}/ready").json() == {"name": CLASSIFIER, "ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


def test_v2_infer_round_trip_with_the_spec_json(client, store):
    image = Image.open(io.BytesIO(png_bytes(random_rgb(50, 70, seed=33))))
    tensor = model_input(store, CLASSIFIER, image)
    request = {"id": "abc", "inputs": [{"name": "images", "shape": [1, 3, 128, 128], "datatype": "FP32",
                                        "data": tensor.ravel().tolist()}]}
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", json=request)
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_name"] == CLASSIFIER and answer["id"] == "abc"
    (output,) = answer["outputs"]
    assert output["name"] == "logits" and output["datatype"] == "FP32" and output["shape"] == [1, 10]
    np.testing.assert_allclose(output["data"], run_exported(store, CLASSIFIER, tensor[None]).ravel(), atol=1e-5)


def test_v2_infer_of_a_softmax_model_returns_the_raw_logits(client, store):
    tensor = model_input(store, SOFTMAX_CLASSIFIER, Image.open(io.BytesIO(png_bytes(random_rgb(40, 60, seed=34)))))
    request = {"inputs": [{"name": "images", "shape": [1, 3, 128, 128], "datatype": "FP32",
                           "data": tensor.ravel().tolist()}]}
    response = client.post(f"/v2/models/{SOFTMAX_CLASSIFIER}/infer", json=request)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    logits = run_exported(store, SOFTMAX_CLASSIFIER, tensor[None]).ravel()
    np.testing.assert_allclose(output["data"], logits, atol=1e-5)  # not probabilities: no activation applied


def test_v2_infer_with_the_triton_client_and_binary_tensors(server, store):
    batch = np.random.default_rng(0).random((3, 3, SEGMENTER_SIZE, SEGMENTER_SIZE), dtype=np.float32)
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready(SEGMENTER)
    inputs = triton.InferInput("images", list(batch.shape), "FP32")
    inputs.set_data_from_numpy(batch)  # binary tensor extension
    result = client.infer(SEGMENTER, [inputs], outputs=[triton.InferRequestedOutput("logits")])
    np.testing.assert_allclose(result.as_numpy("logits"), run_exported(store, SEGMENTER, batch), atol=1e-4)


def test_v2_bad_tensors_are_400(client):
    def post(body: dict) -> dict:
        response = client.post(f"/v2/models/{CLASSIFIER}/infer", json=body)
        assert response.status_code == 400
        return response.json()

    ones = [1.0] * (3 * 128 * 128)
    assert "[-1, 3, 128, 128]" in post({"inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32",
                                                    "data": ones[: 3 * 64 * 64]}]})["detail"]
    assert "FP32" in post({"inputs": [{"name": "images", "shape": [1, 3, 128, 128], "datatype": "INT8",
                                       "data": ones}]})["detail"]
    assert "needs 49152" in post({"inputs": [{"name": "images", "shape": [1, 3, 128, 128], "datatype": "FP32",
                                              "data": ones[:10]}]})["detail"]
    assert "'images'" in post({"inputs": [{"name": "x", "shape": [1, 3, 128, 128], "datatype": "FP32",
                                           "data": ones}]})["detail"]
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", content=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_tensor"


def test_v2_tensors_and_uploads_of_other_sizes_mixed_in_batches_all_answer(client):
    """A dynamic-size segmenter fed 32 px v2 tensors and 64 px uploads at once: batches never mix shapes."""
    tensor = np.zeros((1, 3, 32, 32), dtype=np.float32).ravel().tolist()
    body = {"inputs": [{"name": "images", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": tensor}]}
    upload = png_bytes(random_rgb(48, 40, seed=3))

    def v2(_):
        return client.post(f"/v2/models/{SEGMENTER}/infer", json=body).status_code

    def segment(_):
        return client.post(f"/segment?model={SEGMENTER}&format=json", files={"file": ("a.png", upload)}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(v2, range(12))) + list(pool.map(segment, range(12)))
        mixed = [pool.submit(v2 if i % 2 else segment, i) for i in range(24)]
        codes += [f.result() for f in mixed]
    assert codes == [200] * 48


def test_robustness_stacks_among_v2_tensors_and_uploads_of_other_sizes_all_answer(client):
    """Stacks of masked copies (each a batch of its own) queued with requests of two sizes: the batcher takes
    requests of one size out of line past waiting stacks. That once compared a request with a stack and stopped
    the model's batching loop, so every request after it waited in vain."""
    tensor = np.zeros((2, 3, 32, 32), dtype=np.float32).ravel().tolist()
    body = {"inputs": [{"name": "images", "shape": [2, 3, 32, 32], "datatype": "FP32", "data": tensor}]}
    upload = png_bytes(random_rgb(48, 40, seed=3))

    def send(i: int) -> int:
        if i % 3 == 0:
            return client.post(f"/robustness?model={SEGMENTER}&n=3&seed={i}",
                               files={"file": ("a.png", upload)}).status_code
        if i % 3 == 1:
            return client.post(f"/v2/models/{SEGMENTER}/infer", json=body).status_code
        return client.post(f"/segment?model={SEGMENTER}&format=json", files={"file": ("a.png", upload)}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, range(48)))
    assert codes == [200] * 48
    assert send(2) == 200


def test_the_index_of_a_server_whose_every_model_failed_lists_only_the_status_endpoints():
    from server.banner import curl_examples
    from server.settings import Settings

    assert [endpoint for endpoint, _ in curl_examples(Settings(), {})] == [
        "GET /health", "GET /ready", "GET /models", "GET /metrics"]
