"""Request tracing against a real uvicorn serving the app in this process, its spans caught by the OpenTelemetry
SDK's in-memory exporter: the span tree of one request, and its timings against the answer's ``timing`` fields."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from PIL import Image
from tritonclient.utils import InferenceServerException

from loadtests.processes import free_port
from server.logs import ACCESS_LOGGER, JsonFormatter, TraceContextFilter
from server.main import create_app
from server.settings import Settings
from server.tracing import Tracing
from tests.server.conftest import CLASSIFIER
from tests.server.oracle import jpeg_bytes, model_input, random_rgb

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
# Sampled (bit 0); a trace the server starts also has W3C level 2's "random trace id" flag (bit 1): 03.
TRACEPARENT_PATTERN = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]$")
# The timing fields are rounded to 0.01 ms; a span's ends are whole nanoseconds on the same monotonic readings.
TOLERANCE_MS = 0.005 + 1e-5
STAGES = ("admission", "receive", "decode", "queue", "inference", "postprocess")


class Records(logging.Handler):
    """Keeps the access records, tagged by the trace filter as a configured server's handler would be."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.addFilter(TraceContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Traced:
    client: httpx.Client
    exporter: InMemorySpanExporter
    log: Records
    grpc_target: str

    def spans(self, trace_id: str, timeout: float = 10.0) -> list[ReadableSpan]:
        """The finished spans of one trace, once its root (ended after the answer went out) is among them."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [s for s in self.exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
            if any(s.kind == SpanKind.SERVER for s in spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.02)

    def access(self, trace_id: str) -> logging.LogRecord:
        """The access record of the request of this trace."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for record in self.log.records:
                if record.fields.get("trace_id") == trace_id:
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no access line carries trace id {trace_id}")


@contextlib.contextmanager
def serving(store: Path, tracing: Tracing | None = None, **settings: Any) -> Iterator[httpx.Client]:
    """The app on a real uvicorn in a thread of this process, its model ready; stopped (lifespan end) on exit."""
    app = create_app(Settings(store=store, models=(CLASSIFIER,), intra_op_threads=1, decode_threads=2, **settings),
                     tracing=tracing)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "model not ready"
                time.sleep(0.1)
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def traced(store: Path) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    access = logging.getLogger(ACCESS_LOGGER)
    records, level = Records(), access.level
    access.addHandler(records)
    access.setLevel(logging.INFO)
    try:
        grpc_port = free_port()
        with serving(store, Tracing(1.0, exporter), grpc_port=grpc_port) as client:
            yield Traced(client, exporter, records, f"127.0.0.1:{grpc_port}")
    finally:
        access.removeHandler(records)
        access.setLevel(level)


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    names = [s.name for s in spans]
    assert len(names) == len(set(names)), names
    return {s.name: s for s in spans}


def ms(span: ReadableSpan) -> float:
    return (span.end_time - span.start_time) / 1e6


def image() -> bytes:
    return jpeg_bytes(random_rgb(96, 120, seed=5))


def test_predict_span_tree_continues_the_trace_and_matches_the_timing_fields(traced):
    response = traced.client.post("/predict", files={"file": ("a.jpg", image(), "image/jpeg")},
                                  headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    timing = response.json()["timing"]
    echoed = TRACEPARENT_PATTERN.match(response.headers["traceparent"])
    assert echoed and echoed[1] == TRACE_ID and echoed[2] != PARENT_ID  # the server span's own id

    spans = by_name(traced.spans(TRACE_ID))
    root = spans.pop("POST /predict")
    assert set(spans) == set(STAGES)
    assert root.kind == SpanKind.SERVER and root.parent is not None and f"{root.parent.span_id:016x}" == PARENT_ID
    assert f"{root.context.span_id:016x}" == echoed[2] and root.parent.is_remote
    for child in spans.values():
        assert child.parent.span_id == root.context.span_id and child.context.trace_id == root.context.trace_id
    assert root.attributes["http.route"] == "/predict" and root.attributes["http.response.status_code"] == 200
    assert root.attributes["inference.model"] == CLASSIFIER and root.attributes["inference.precision"] == "fp32"
    assert root.attributes["inference.batch_size"] == timing["batch_size"] == 1
    assert root.status.status_code == StatusCode.UNSET

    for name in ("decode", "queue", "inference"):
        assert abs(ms(spans[name]) - timing[f"{name}_ms"]) <= TOLERANCE_MS, (name, ms(spans[name]), timing)
    total = (spans["postprocess"].end_time - root.start_time) / 1e6
    assert abs(total - timing["total_ms"]) <= TOLERANCE_MS, (total, timing)
    assert root.end_time >= spans["postprocess"].end_time  # the answer is sent after its total is taken
    # The stages follow one another on the root's timeline.
    assert spans["admission"].start_time == root.start_time
    order = [spans[name] for name in STAGES]
    for before, after in itertools.pairwise(order):
        assert before.end_time <= after.start_time, (before.name, after.name)
    assert spans["queue"].end_time == spans["inference"].start_time


def test_a_request_without_traceparent_starts_a_new_trace_and_gets_it_echoed(traced):
    response = traced.client.post("/predict", content=image(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    echoed = TRACEPARENT_PATTERN.match(response.headers["traceparent"])
    assert echoed and echoed[1] != TRACE_ID and int(echoed[1], 16) != 0, response.headers["traceparent"]
    (root,) = [s for s in traced.spans(echoed[1]) if s.kind == SpanKind.SERVER]
    assert root.parent is None and f"{root.context.span_id:016x}" == echoed[2]


@pytest.mark.parametrize("header", ["00-nothex-00f067aa0ba902b7-01", f"00-{'0' * 32}-{PARENT_ID}-01",
                                    f"ff-{TRACE_ID}-{PARENT_ID}-01", "x" * 600])
def test_a_malformed_traceparent_is_ignored(traced, header):
    response = traced.client.post("/predict", content=image(), headers={"content-type": "image/jpeg",
                                                                        "traceparent": header})
    assert response.status_code == 200, response.text
    echoed = TRACEPARENT_PATTERN.match(response.headers["traceparent"])
    assert echoed and echoed[1] != TRACE_ID
    (root,) = [s for s in traced.spans(echoed[1]) if s.kind == SpanKind.SERVER]
    assert root.parent is None


def test_the_access_line_and_other_records_carry_the_trace_id(traced):
    response = traced.client.post("/predict", content=image(), headers={"content-type": "image/jpeg",
                                                                        "traceparent": TRACEPARENT.replace("4bf9",
                                                                                                           "5bf9")})
    trace_id = "5bf9" + TRACE_ID[4:]
    echoed = TRACEPARENT_PATTERN.match(response.headers["traceparent"])
    record = traced.access(trace_id)
    assert record.fields["span_id"] == echoed[2] and record.fields["model"] == CLASSIFIER
    # The filter a configured server's handler carries tags any record logged inside the span.
    assert (record.trace_id, record.span_id) == (trace_id, echoed[2])
    line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == trace_id and line["path"] == "/predict"
    outside = logging.LogRecord("server", logging.INFO, __file__, 1, "no request", None, None)
    assert TraceContextFilter().filter(outside) and not hasattr(outside, "trace_id")
    assert "trace_id" not in json.loads(JsonFormatter().format(outside))


def test_a_failing_request_has_an_error_span_with_its_code(traced):
    response = traced.client.post("/predict?model=no-such-model", content=image(),
                                  headers={"content-type": "image/jpeg", "traceparent": TRACEPARENT.replace("4bf9",
                                                                                                            "6bf9")})
    assert response.status_code == 404
    code = response.json()["error"]
    assert code == "unknown_model"
    (root,) = traced.spans("6bf9" + TRACE_ID[4:])
    assert root.status.status_code == StatusCode.ERROR and root.status.description == code
    assert root.attributes["error.type"] == code and root.attributes["http.response.status_code"] == 404
    assert traced.access("6bf9" + TRACE_ID[4:]).fields["status"] == 404


def test_v2_infer_is_traced_through_the_same_stages(traced, store):
    tensor = model_input(store, CLASSIFIER, Image.open(io.BytesIO(image())))
    request = {"inputs": [{"name": "images", "shape": [1, 3, 128, 128], "datatype": "FP32",
                           "data": tensor.ravel().tolist()}]}
    trace_id = "7bf9" + TRACE_ID[4:]
    response = traced.client.post(f"/v2/models/{CLASSIFIER}/infer", json=request,
                                  headers={"traceparent": TRACEPARENT.replace("4bf9", "7bf9")})
    assert response.status_code == 200
    assert TRACEPARENT_PATTERN.match(response.headers["traceparent"])[1] == trace_id
    spans = by_name(traced.spans(trace_id))
    root = spans.pop("POST /v2/models/{model}/infer")
    assert set(spans) == set(STAGES)
    assert all(child.parent.span_id == root.context.span_id for child in spans.values())
    assert root.attributes["inference.model"] == CLASSIFIER and root.attributes["inference.batch_size"] == 1
    assert root.attributes["url.path"] == f"/v2/models/{CLASSIFIER}/infer"
    order = [spans[name] for name in STAGES]
    for before, after in itertools.pairwise(order):
        assert before.end_time <= after.start_time, (before.name, after.name)
    assert order[-1].end_time <= root.end_time


def test_probes_are_not_traced(traced):
    response = traced.client.get("/health")
    assert response.status_code == 200 and "traceparent" not in response.headers


def test_the_sample_ratio_applies_to_new_traces_and_a_sampled_parent_is_obeyed(store):
    exporter = InMemorySpanExporter()
    with serving(store, Tracing(0.0, exporter)) as client:
        fresh = client.post("/predict", content=image(), headers={"content-type": "image/jpeg"})
        parented = client.post("/predict", content=image(), headers={"content-type": "image/jpeg",
                                                                     "traceparent": TRACEPARENT})
    assert fresh.status_code == parented.status_code == 200
    unsampled = re.match(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[02]$", fresh.headers["traceparent"])
    assert unsampled and int(unsampled[1], 16) != 0  # a trace id all the same, for the logs and the client
    assert TRACEPARENT_PATTERN.match(parented.headers["traceparent"])[1] == TRACE_ID
    names = sorted(s.name for s in exporter.get_finished_spans())  # the app has stopped: every span has ended
    assert names == sorted(["POST /predict", *STAGES])
    assert {f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()} == {TRACE_ID}


class Collector(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: keeps every span it receives (class-level, one test at a time)."""

    spans: ClassVar[list] = []
    posts: ClassVar[set[tuple[str, str]]] = set()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.posts.add((self.path, self.headers["Content-Type"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
            Collector.spans += [(service, span) for scope in resource.scope_spans for span in scope.spans]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_otlp_endpoint_exports_over_http_and_flushes_at_shutdown(store):
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    Collector.spans, Collector.posts = [], set()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    try:
        with serving(store, otlp_endpoint=endpoint) as client:  # the tracer create_app builds from the settings
            response = client.post("/predict", content=image(), headers={"content-type": "image/jpeg",
                                                                         "traceparent": TRACEPARENT})
            assert response.status_code == 200
        # The batch processor waits up to 5 s between exports; stopping the app flushed it.
        received = [(service, span) for service, span in Collector.spans if span.trace_id.hex() == TRACE_ID]
    finally:
        collector.shutdown()
    assert Collector.posts == {("/v1/traces", "application/x-protobuf")}
    assert {service for service, _ in received} == {"occlusion-serve"}
    spans = {span.name: span for _, span in received}
    assert sorted(spans) == sorted(["POST /predict", *STAGES])
    root = spans["POST /predict"]
    assert root.parent_span_id.hex() == PARENT_ID
    assert all(spans[name].parent_span_id == root.span_id for name in STAGES)
    timing = response.json()["timing"]
    inference = spans["inference"]
    assert abs((inference.end_time_unix_nano - inference.start_time_unix_nano) / 1e6 - timing["inference_ms"]) \
        <= TOLERANCE_MS


def test_a_grpc_call_is_traced_through_the_same_pipeline(traced, store):
    tensor = model_input(store, CLASSIFIER, Image.open(io.BytesIO(image())))
    trace_id = "8bf9" + TRACE_ID[4:]
    with grpcclient.InferenceServerClient(traced.grpc_target) as client:
        images = grpcclient.InferInput("images", list(tensor[None].shape), "FP32")
        images.set_data_from_numpy(tensor[None].astype(np.float32))
        client.infer(CLASSIFIER, [images], headers={"traceparent": TRACEPARENT.replace("4bf9", "8bf9")})
    spans = by_name(traced.spans(trace_id))
    root = spans.pop("gRPC ModelInfer")
    assert root.kind == SpanKind.SERVER and f"{root.parent.span_id:016x}" == PARENT_ID
    assert set(spans) == {"admission", "decode", "queue", "inference", "postprocess"}
    assert all(child.parent.span_id == root.context.span_id for child in spans.values())
    assert root.attributes["rpc.method"] == "ModelInfer" and root.attributes["rpc.grpc.status_code"] == 0
    assert root.attributes["inference.model"] == CLASSIFIER and root.attributes["inference.batch_size"] == 1
    order = [spans[name] for name in ("admission", "decode", "queue", "inference", "postprocess")]
    for before, after in itertools.pairwise(order):
        assert before.end_time <= after.start_time, (before.name, after.name)
    assert root.start_time <= order[0].start_time and order[-1].end_time <= root.end_time
    assert traced.access(trace_id).fields["path"] == "/inference.GRPCInferenceService/ModelInfer"


def test_a_failing_grpc_call_has_an_error_span_with_its_code(traced):
    trace_id = "9bf9" + TRACE_ID[4:]
    with grpcclient.InferenceServerClient(traced.grpc_target) as client, pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model", headers={"traceparent": TRACEPARENT.replace("4bf9", "9bf9")})
    (root,) = traced.spans(trace_id)
    assert root.name == "gRPC ModelMetadata" and root.status.status_code == StatusCode.ERROR
    assert root.attributes["error.type"] == "unknown_model" and root.attributes["rpc.grpc.status_code"] == 5
