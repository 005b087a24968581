"""KServe v2 over gRPC, with tritonclient.grpc against the real servers: the same answers as the HTTP v2 route bit
for bit, the same errors as gRPC statuses, the same API key, shedding and deadlines."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtests.processes import free_port
from tests.server.conftest import API_KEY, CLASSIFIER, EXTRA_LATENCY_MS, MAX_BODY_BYTES, SEGMENTER
from tests.server.oracle import metric

AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def client(server) -> grpcclient.InferenceServerClient:
    """A tritonclient.grpc client of the main server."""
    with grpcclient.InferenceServerClient(server.grpc_target) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    """The raw generated stub, for messages tritonclient would never send."""
    channel = grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", 64 << 20)])
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def batch(client: grpcclient.InferenceServerClient, model: str, n: int, seed: int) -> tuple[np.ndarray, str, str]:
    """A random (n, 3, H, W) FP32 batch the model takes, its input and output names."""
    meta = client.get_model_metadata(model)
    shape = [n, *(int(d) if int(d) > 0 else 96 for d in meta.inputs[0].shape[1:])]  # -1: any size
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32), meta.inputs[0].name, \
        meta.outputs[0].name


def grpc_infer(client, model: str, images: np.ndarray, name: str, **kwargs) -> grpcclient.InferResult:
    """One ModelInfer call through tritonclient.grpc (raw_input_contents)."""
    tensor = grpcclient.InferInput(name, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return client.infer(model, [tensor], **kwargs)


def http_infer(server, model: str, images: np.ndarray, name: str, output: str) -> np.ndarray:
    """The same request through tritonclient.http, binary tensors both ways."""
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as c:
        tensor = httpclient.InferInput(name, list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=True)
        result = c.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput(output, binary_data=True)])
        return result.as_numpy(output)


def status_of(call) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The status, detail and trailing metadata of a raw stub call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    return error.code(), error.details(), dict(error.trailing_metadata() or ())


def infer_request(model: str, shape: list[int], raw: bytes | None = None, **fields) -> pb.ModelInferRequest:
    """A hand-built ModelInferRequest with one FP32 input named ``images``."""
    tensor = pb.ModelInferRequest.InferInputTensor(name=fields.pop("input_name", "images"),
                                                   datatype=fields.pop("datatype", "FP32"), shape=shape,
                                                   contents=fields.pop("contents", None))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[] if raw is None else [raw],
                                **fields)


def test_health_and_metadata_match_the_http_routes(server, client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(CLASSIFIER) and client.is_model_ready(SEGMENTER)
    with server.client() as http:
        assert client.get_server_metadata(as_json=True) == http.get("/v2").json()
        for model in (CLASSIFIER, SEGMENTER):
            expected = http.get(f"/v2/models/{model}").json()
            got = client.get_model_metadata(model, as_json=True)
            assert got["name"] == model and got["versions"] == expected["versions"]
            assert got["platform"] == expected["platform"] == "onnxruntime_onnx"
            for kind in ("inputs", "outputs"):
                assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in got[kind]] == \
                    [(t["name"], t["datatype"], t["shape"]) for t in expected[kind]]


@pytest.mark.parametrize("model", [CLASSIFIER, SEGMENTER])
def test_answers_equal_the_http_binary_route_bit_for_bit(server, client, model):
    images, name, output = batch(client, model, 3, seed=7)
    result = grpc_infer(client, model, images, name, request_id="req-42")
    answer = result.as_numpy(output)
    assert answer.dtype == np.float32 and answer.shape[0] == 3
    assert np.array_equal(answer, http_infer(server, model, images, name, output))
    response = result.get_response()
    assert response.id == "req-42" and response.model_name == model and response.model_version == "1"


def test_fp32_contents_give_the_same_answer_as_raw_bytes(client, stub):
    images, name, output = batch(client, CLASSIFIER, 2, seed=3)
    contents = pb.InferTensorContents(fp32_contents=images.ravel().tolist())
    answer = stub.ModelInfer(infer_request(CLASSIFIER, list(images.shape), contents=contents, input_name=name))
    raw = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(list(answer.outputs[0].shape))
    assert answer.outputs[0].name == output
    assert np.array_equal(raw, grpc_infer(client, CLASSIFIER, images, name).as_numpy(output))


def test_hostile_messages_get_invalid_argument_naming_the_field(client, stub):
    images, name, _ = batch(client, CLASSIFIER, 1, seed=1)
    shape, raw = list(images.shape), images.tobytes()
    cases = {
        "datatype": (infer_request(CLASSIFIER, shape, raw, datatype="INT32", input_name=name),
                     "'inputs[0].datatype' is 'INT32'"),
        "size": (infer_request(CLASSIFIER, shape, raw[:-4], input_name=name),
                 f"holds {len(raw) - 4} bytes, but shape {shape} of FP32 is {len(raw)} bytes"),
        "huge declared shape": (infer_request(CLASSIFIER, [4096, 3, shape[2], shape[3]], raw, input_name=name),
                                f"shape [4096, 3, {shape[2]}, {shape[3]}] of FP32 is"),
        "shape": (infer_request(CLASSIFIER, [1, 3, 7, 7], raw, input_name=name), "does not fit the model's"),
        "name": (infer_request(CLASSIFIER, shape, raw, input_name="pixels"), "input 'pixels' is unknown"),
        "two tensors": (pb.ModelInferRequest(model_name=CLASSIFIER, inputs=infer_request(
            CLASSIFIER, shape, input_name=name).inputs, raw_input_contents=[raw, raw]), "holds 2 tensors"),
        "nan": (infer_request(CLASSIFIER, shape, np.full_like(images, np.nan).tobytes(), input_name=name),
                "NaN or infinite"),
        "wrong content type": (infer_request(CLASSIFIER, shape, input_name=name,
                                             contents=pb.InferTensorContents(int_contents=[1, 2, 3])),
                               "'inputs[0].contents.int_contents' holds the data"),
        "no data": (infer_request(CLASSIFIER, shape, input_name=name), "carries no data"),
        "unknown output": (infer_request(CLASSIFIER, shape, raw, input_name=name, outputs=[
            pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")]), "output 'probabilities'"),
    }
    for case, (request, detail) in cases.items():
        code, text, trailing = status_of(lambda r=request: stub.ModelInfer(r))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, case
        assert detail in text, (case, text)
        assert trailing.get("error-code") == "invalid_tensor", case
    assert grpc_infer(client, CLASSIFIER, images, name).as_numpy(batch(client, CLASSIFIER, 1, 1)[2]).shape[0] == 1


def test_unknown_model_or_version_is_not_found(stub, client):
    images, _, _ = batch(client, CLASSIFIER, 1, seed=1)
    code, text, trailing = status_of(lambda: stub.ModelInfer(infer_request("nope", list(images.shape),
                                                                           images.tobytes())))
    assert code == grpc.StatusCode.NOT_FOUND and "'nope' is not served" in text
    assert trailing["error-code"] == "unknown_model"
    code, text, _ = status_of(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=CLASSIFIER, version="9")))
    assert code == grpc.StatusCode.NOT_FOUND and "not '9'" in text


def test_a_message_over_the_body_limit_is_refused_by_grpc_before_it_is_parsed(stub, client):
    images, name, output = batch(client, CLASSIFIER, 1, seed=1)
    big = b"\0" * (MAX_BODY_BYTES + 1)
    code, text, _ = status_of(lambda: stub.ModelInfer(infer_request(CLASSIFIER, [1, 3, 1, 1], big, input_name=name)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in text
    assert grpc_infer(client, CLASSIFIER, images, name).as_numpy(output).shape[0] == 1  # still serving


def test_metrics_and_access_log_count_grpc_calls(server, client):
    images, name, _ = batch(client, CLASSIFIER, 1, seed=2)
    grpc_infer(client, CLASSIFIER, images, name)
    with server.client() as http:
        text = http.get("/metrics").text
    assert 'route="/inference.GRPCInferenceService/ModelInfer",status="200"' in text
    assert 'route="/inference.GRPCInferenceService/ModelInfer",status="400"' in text  # the hostile ones
    assert '"method": "gRPC", "path": "/inference.GRPCInferenceService/ModelInfer"' in server.logs()


def test_api_key_is_read_from_metadata_and_health_stays_open(strict_server):
    with grpcclient.InferenceServerClient(strict_server.grpc_target) as c:
        assert c.is_server_live() and c.get_server_metadata().name == "occlusion-serve"
        with pytest.raises(InferenceServerException) as caught:
            c.get_model_metadata(CLASSIFIER)
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED" and "Bearer" in caught.value.message()
        assert c.get_model_metadata(CLASSIFIER, headers=AUTH).name == CLASSIFIER
    channel = grpc.insecure_channel(strict_server.grpc_target)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    for metadata, error in (((), "missing_api_key"), ((("authorization", "Bearer wrong"),), "invalid_api_key")):
        code, _, trailing = status_of(lambda m=metadata: stub.ModelReady(pb.ModelReadyRequest(name=CLASSIFIER),
                                                                         metadata=m))
        assert code == grpc.StatusCode.UNAUTHENTICATED and trailing["error-code"] == error
    assert stub.ModelReady(pb.ModelReadyRequest(name=CLASSIFIER), metadata=tuple(AUTH.items())).ready
    channel.close()


def strict_infer(strict_server, images: np.ndarray, name: str, timeout: float | None = None):
    """One ModelInfer on the strict server; its status code and how long it took."""
    start = time.monotonic()
    with grpcclient.InferenceServerClient(strict_server.grpc_target) as c:
        try:
            grpc_infer(c, CLASSIFIER, images, name, headers=AUTH, client_timeout=timeout)
            code = "OK"
        except InferenceServerException as exc:
            code = exc.status().removeprefix("StatusCode.")
    return code, time.monotonic() - start


def batch_with_key(c: grpcclient.InferenceServerClient) -> tuple[np.ndarray, str, str]:
    """A one-image batch for the strict server's classifier (its metadata read with the key)."""
    meta = c.get_model_metadata(CLASSIFIER, headers=AUTH)
    shape = [1, *map(int, meta.inputs[0].shape[1:])]
    return np.zeros(shape, np.float32), meta.inputs[0].name, meta.outputs[0].name


def idle_strict_batch(strict_server) -> tuple[np.ndarray, str]:
    """A batch for the strict server and its input name, once the server runs and queues nothing."""
    with grpcclient.InferenceServerClient(strict_server.grpc_target) as c:
        images, name, _ = batch_with_key(c)
    strict_server.wait_for_gauge("batches_running", 0)
    strict_server.wait_for_gauge("queue_depth", 0)
    return images, name


def occupy(pool: ThreadPoolExecutor, strict_server, images: np.ndarray, name: str) -> Future:
    """A call running its 2 s batch; its future. Its batch ends 1 s before its 3 s deadline, which a loaded
    machine could eat up, so it answers OK or DEADLINE_EXCEEDED."""
    running = pool.submit(strict_infer, strict_server, images, name)
    strict_server.wait_for_gauge("batches_running", 1)
    return running


def test_shedding_is_resource_exhausted_and_late_answers_deadline_exceeded(strict_server):
    """The strict server (queue of one, 2 s batches, 3 s deadline): one call runs, one waits past its
    deadline, the rest are shed at once, as the HTTP route answers 200, 504 and 503."""
    images, name = idle_strict_batch(strict_server)
    with ThreadPoolExecutor(8) as pool:
        running = occupy(pool, strict_server, images, name)
        waiting = pool.submit(strict_infer, strict_server, images, name)
        strict_server.wait_for_gauge("queue_depth", 1)
        shed = list(pool.map(lambda _: strict_infer(strict_server, images, name), range(4)))
    assert running.result()[0] in ("OK", "DEADLINE_EXCEEDED")
    assert waiting.result()[0] == "DEADLINE_EXCEEDED"  # it cannot finish before 4 s
    assert [code for code, _ in shed] == ["RESOURCE_EXHAUSTED"] * 4
    assert all(seconds < EXTRA_LATENCY_MS / 1000 for code, seconds in shed)


def test_a_client_whose_deadline_passes_leaves_the_queue_and_is_logged_as_gone(strict_server):
    images, name = idle_strict_batch(strict_server)
    batches = metric(strict_server.metrics(), "batch_size_count", model=CLASSIFIER)
    with ThreadPoolExecutor(2) as pool:
        running = occupy(pool, strict_server, images, name)
        code, seconds = strict_infer(strict_server, images, name, timeout=0.1)  # queued behind the 2 s batch
        assert code == "DEADLINE_EXCEEDED" and seconds < 1.0  # not kept waiting for the batch
        strict_server.wait_for_gauge("queue_depth", 0)  # its place is free while the 2 s batch still runs
        assert metric(strict_server.metrics(), "batches_running", model=CLASSIFIER) == 1
        assert running.result()[0] in ("OK", "DEADLINE_EXCEEDED")
    strict_server.wait_for_gauge("batches_running", 0)
    assert metric(strict_server.metrics(), "batch_size_count", model=CLASSIFIER) == batches + 1  # it never ran
    assert '"status": 499' in strict_server.logs()


def test_a_taken_grpc_port_is_a_one_line_error(store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "server", "--store", str(store), "--port", str(free_port()),
                               "--grpc-port", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --grpc-port {port}: cannot listen on 127.0.0.1 (Address "
                                                "already in use)"]


def test_a_traced_call_continues_the_clients_trace_and_logs_its_id(server, stub, client):
    images, name, _ = batch(client, CLASSIFIER, 1, seed=4)
    trace_id = "5af92f3577b34da6a3ce929d0e0e4736"
    call = stub.ModelInfer.with_call(infer_request(CLASSIFIER, list(images.shape), images.tobytes(), input_name=name),
                                     metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),))
    trailing = dict(call[1].trailing_metadata())
    assert trailing["traceparent"].split("-")[1] == trace_id
    deadline = time.monotonic() + 10
    while f'"trace_id": "{trace_id}"' not in server.logs():
        assert time.monotonic() < deadline, "no access line with the trace id"
        time.sleep(0.05)
    code, _, trailing = status_of(lambda: stub.ModelInfer(infer_request("nope", [1], b""), metadata=(
        ("traceparent", "not-a-traceparent"),)))
    assert code == grpc.StatusCode.NOT_FOUND and len(trailing["traceparent"].split("-")[1]) == 32  # a new trace
