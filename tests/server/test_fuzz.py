"""Property-based fuzzing of the OpenAPI schema against the live main server (issue 12, item 7).

schemathesis reads ``/openapi.json`` from the real ``python -m server`` subprocess (the ``server`` fixture) and sends,
for every operation:

1. each documented example, once;
2. schemathesis' coverage cases: boundary and out-of-range values, missing and wrong-typed parameters, unexpected
   methods and media types (the same every run, 9 to 107 per operation);
3. ``FUZZ_MAX_EXAMPLES`` (25) requests drawn by hypothesis, valid and invalid ones mixed (random query values,
   JSON bodies and uploads).

Every answer must pass schemathesis' ``not_a_server_error`` check, and every error answer must be the server's JSON
``{"error", "detail"}`` body. The server's deliberate refusals are not server errors: 503 ``queue_full`` /
``overloaded`` / ``model_loading`` and 504 ``deadline_exceeded`` are its limits at work. Any other 5xx (a 500
``internal_error``, a 503 ``inference_failed``...) fails the operation's test, which lists every failing request as a
curl command with the server's log lines for it.

Two runs go further. v2 inference bodies are drawn by a hypothesis strategy that fits each model's input shape and
then breaks the body in one of 16 ways (a value short, a wrong datatype, huge dimensions, nested wrongly...): a
fitting body must be answered, a broken one must get a 400. And the strict server, started with ``--api-key``, is
fuzzed with the key on every keyed operation, while each coverage case sent without the key must get a 401.

The seed is fixed, so ``make test`` sends the same requests each time. ``FUZZ_SEED=<n>`` draws other ones and
``FUZZ_MAX_EXAMPLES=<n>`` changes how many (see docs/reliability.md, "Fuzzing").

Why not ``schemathesis.pytest.from_fixture(...).parametrize()``: in schemathesis 4.32.5 the lazy schema renames the
running test through ``request.node._nodeid``, which pytest 9.2 no longer has (``AttributeError``). The test below
draws from the same sources (``APIOperation.as_strategy``, the operation's examples and the schema's coverage cases)
with plain hypothesis and pytest.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import hypothesis
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from tests.server.conftest import API_KEY, CLASSIFIER, SEGMENTER, LiveServer

FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "12007"))
FUZZ_MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
REQUEST_TIMEOUT_S = 60.0
MAX_REPORTED = 10  # failing requests printed per operation

# Every operation of the schema; `test_every_operation_is_fuzzed` keeps this list in step with /openapi.json.
OPERATIONS = (
    "GET /",
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /models",
    "POST /predict",
    "POST /segment",
    "POST /robustness",
    "POST /evaluations",
    "GET /evaluations",
    "GET /evaluations/{job_id}",
    "DELETE /evaluations/{job_id}",
    "GET /evaluations/{job_id}/files/{name}",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{model}",
    "GET /v2/models/{model}/ready",
    "POST /v2/models/{model}/infer",
    "POST /v2/repository/index",
    "POST /v2/repository/models/{model}/load",
    "POST /v2/repository/models/{model}/unload",
)

# 5xx answers that are the server's limits doing their job, by status and error code.
DELIBERATE = {503: {"queue_full", "overloaded", "model_loading"}, 504: {"deadline_exceeded"}}
# Readiness probes answer 503 with their own body (not an error body) while a model loads.
READINESS = {"/ready", "/v2/health/ready", "/v2/models/{model}/ready"}


@pytest.fixture(scope="session")
def api_schema(server: LiveServer) -> schemathesis.BaseSchema:
    """The live main server's OpenAPI schema, as schemathesis reads it."""
    config = schemathesis.Config.from_dict({
        "seed": FUZZ_SEED,
        "generation": {"max-examples": FUZZ_MAX_EXAMPLES},
        # 503 and 504 pass this check; `deliberate_refusals_only` then requires one of the deliberate codes.
        "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]}},
    })
    return schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)


def _json_body(response) -> object:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def error_body_is_json(ctx, response, case) -> None:
    """Every 4xx/5xx answer (but a readiness probe's 503) is JSON with string ``error`` and ``detail``."""
    if response.status_code < 400 or (response.status_code == 503 and case.operation.path in READINESS):
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answer is {content_type or 'untyped'}, not JSON: {response.content[:200]!r}")
    body = _json_body(response)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), (
        f"{response.status_code} answer is not {{'error', 'detail'}}: {response.content[:300]!r}")


def deliberate_refusals_only(ctx, response, case) -> None:
    """A 503 or 504 must be one of the server's deliberate refusals, not a failure in disguise."""
    status = response.status_code
    if status not in DELIBERATE or (status == 503 and case.operation.path in READINESS):
        return
    body = _json_body(response)
    code = body.get("error") if isinstance(body, dict) else None
    assert code in DELIBERATE[status], f"{status} {code!r} is not a deliberate refusal: {response.content[:300]!r}"


CHECKS = [not_a_server_error, error_body_is_json, deliberate_refusals_only]


@dataclass
class Findings:
    """The failing requests to one operation, each with its reproduction and the server's log lines for it."""

    server: LiveServer
    sent: dict[str, int] = field(default_factory=lambda: {"examples": 0, "coverage": 0, "fuzzing": 0})
    failures: list[str] = field(default_factory=list)

    headers: dict[str, str] = field(default_factory=dict)  # sent with every case (the API key)

    def send(self, phase: str, case: Case, expect: Callable[[Any], None] | None = None) -> None:
        """Send one case and run the checks (and ``expect``) on the answer; a failure is recorded, not raised (no
        shrinking)."""
        self.sent[phase] = self.sent.get(phase, 0) + 1
        log_path = self.server.server.log_path
        offset = log_path.stat().st_size
        response = None
        try:
            response = case.call(timeout=REQUEST_TIMEOUT_S, headers=self.headers or None)
            case.validate_response(response, checks=CHECKS)
            if expect is not None:
                expect(response)
        except (AssertionError, BaseExceptionGroup, OSError) as exc:  # requests' errors are OSErrors
            time.sleep(0.2)  # let the server write its log lines for this request
            log = log_path.read_bytes()[offset:].decode(errors="replace").strip()
            self.failures.append(self._describe(phase, case, response, exc, log))

    @staticmethod
    def _describe(phase: str, case: Case, response, exc: BaseException, log: str) -> str:
        reasons = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        what = "; ".join(f"{type(e).__name__}: {e}".replace("\n", " ") for e in reasons)
        answer = (f"{response.status_code} {response.content[:300]!r}" if response is not None else "no answer")
        log = "\n".join(log.splitlines()[:40])
        return (f"[{phase}] {what}\n  answer: {answer}\n  reproduce: {case.as_curl_command()}\n"
                f"  server log:\n{log}")


def _run(label: str, strategy: st.SearchStrategy[Case], run: settings, send) -> None:
    """Draw cases from ``strategy`` with hypothesis (seeded per operation) and send each one."""

    @hypothesis.seed(FUZZ_SEED ^ zlib.crc32(label.encode()))
    @run
    @given(case=strategy)
    def draw(case: Case) -> None:
        send(case)

    draw()


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_server_errors(api_schema, server, label):
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in /openapi.json"
    findings = Findings(server)
    run = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck),
                   phases=(Phase.explicit, Phase.generate), verbosity=hypothesis.Verbosity.quiet)

    # 1. The documented examples (missing parameters filled in), each once.
    for strategy in operation.get_strategies_from_examples():
        _run(label, strategy, settings(run, max_examples=1), lambda case: findings.send("examples", case))

    # 2. Coverage cases: boundary values, missing and invalid parameters, unexpected methods and media types.
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    generation = api_schema.config.generation_for(operation=operation, phase="coverage")
    for case in api_schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=generation):
        findings.send("coverage", case)

    # 3. Random requests, valid and invalid.
    fuzz = st.one_of([operation.as_strategy(mode) for mode in modes])
    _run(label, fuzz, settings(run, max_examples=FUZZ_MAX_EXAMPLES), lambda case: findings.send("fuzzing", case))

    print(f"{label}: sent {findings.sent}, {len(findings.failures)} failing")
    if "/v2/repository/" in label:  # the fuzzer's names must not have unloaded a model the other tests use
        with server.client() as client:
            assert client.get("/ready").json()["models"] == dict.fromkeys(client.get("/ready").json()["models"],
                                                                          "ready")
    if findings.failures:
        pytest.fail(f"{len(findings.failures)} failing requests to {label} (sent {findings.sent}, seed {FUZZ_SEED}), "
                    f"the first {MAX_REPORTED}:\n\n" + "\n\n".join(findings.failures[:MAX_REPORTED]), pytrace=False)


# ---- v2 inference bodies: drawn to fit each model's input, then broken in one way or another -------------------

def v2_input_shape(server: LiveServer, model: str) -> list[int]:
    """The model's input shape from its v2 metadata (-1 where the size is free)."""
    with server.client() as client:
        return client.get(f"/v2/models/{model}").json()["inputs"][0]["shape"]


BREAKAGES = ("none", "one_value_short", "one_value_over", "nested", "nested_wrong", "string_value", "huge_value",
             "bool_value", "datatype", "name", "negative_dim", "huge_dims", "parameters_list", "binary_flag_string",
             "outputs_unknown", "binary_output", "extra_input")
ACCEPTED = ("none", "nested", "binary_output")  # the rest are 400s


@st.composite
def v2_bodies(draw: st.DrawFn, shape: list[int], input_name: str, breakage: str) -> dict[str, Any]:
    """A v2 JSON body whose tensor fits ``shape`` (free sizes drawn small, the body under the server's 2 MB upload
    limit), then broken as ``breakage`` says."""
    sizes = [1 if index == 0 else draw(st.integers(16, 72)) if dim == -1 else dim for index, dim in enumerate(shape)]
    sizes[0] = draw(st.integers(1, 2)) if math.prod(sizes) <= 20_000 else 1
    count = math.prod(sizes)
    values = draw(st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=8))
    data: list[Any] = [values[i % len(values)] for i in range(count)]
    tensor: dict[str, Any] = {"name": input_name, "shape": sizes, "datatype": "FP32", "data": data}
    body: dict[str, Any] = {"id": draw(st.text(max_size=8)), "inputs": [tensor]}
    if breakage == "one_value_short":
        tensor["data"] = data[:-1]
    elif breakage == "one_value_over":
        tensor["data"] = [*data, 0.0]
    elif breakage == "nested":  # nested exactly as the shape: as good as flat
        tensor["data"] = np.asarray(data, dtype=np.float64).reshape(sizes).tolist()
    elif breakage == "nested_wrong":  # the right count, nested as another shape
        tensor["data"] = np.asarray(data, dtype=np.float64).reshape([*sizes[:-2], sizes[-1], sizes[-2]]
                                                                    if sizes[-1] != sizes[-2] else [count]).tolist()
        if sizes[-1] == sizes[-2]:
            tensor["data"] = [tensor["data"]]  # one level too deep
    elif breakage in ("string_value", "huge_value", "bool_value"):
        tensor["data"] = [*data[:-1], {"string_value": "1.0", "huge_value": 1e300, "bool_value": True}[breakage]]
    elif breakage == "datatype":
        tensor["datatype"] = draw(st.sampled_from(["FP16", "FP64", "INT8", "BYTES", "fp32", ""]))
    elif breakage == "name":
        tensor["name"] = draw(st.text(max_size=12).filter(lambda name: name != input_name))
    elif breakage == "negative_dim":
        tensor["shape"] = [*sizes[:-1], -sizes[-1]]
    elif breakage == "huge_dims":
        tensor["shape"] = [sizes[0], 3, 10 ** draw(st.integers(5, 30)), 10 ** draw(st.integers(5, 30))]
    elif breakage == "parameters_list":
        body["parameters"] = [draw(st.text(max_size=5))]
    elif breakage == "binary_flag_string":
        body["parameters"] = {"binary_data_output": "true"}
    elif breakage == "outputs_unknown":
        body["outputs"] = [{"name": draw(st.text(max_size=8))}]
    elif breakage == "binary_output":
        body["parameters"] = {"binary_data_output": True}
    elif breakage == "extra_input":
        body["inputs"].append({**tensor, "name": "second"})
    return body


@pytest.mark.parametrize("model", [CLASSIFIER, SEGMENTER])
def test_v2_inference_bodies_drawn_to_fit_the_model(api_schema, server, model):
    """Bodies that fit the model's input are answered with its outputs; each breakage gets a 400, never a 5xx or
    a non-JSON error."""
    operation = api_schema.find_operation_by_label("POST /v2/models/{model}/infer")
    shape = v2_input_shape(server, model)
    with server.client() as client:
        input_name = client.get(f"/v2/models/{model}").json()["inputs"][0]["name"]
    findings = Findings(server)
    seen: dict[str, set[int]] = {}


    def sender(breakage: str) -> Callable[[dict[str, Any]], None]:
        def send(body: dict[str, Any]) -> None:
            case = operation.Case(path_parameters={"model": model}, body=body, media_type="application/json")

            def expect(response: Any) -> None:
                seen.setdefault(breakage, set()).add(response.status_code)
                if breakage in ACCEPTED:
                    assert response.status_code == 200, f"{breakage}: {response.status_code} {response.content[:200]!r}"
                    if not response.headers.get("inference-header-content-length"):
                        outputs = json.loads(response.content)["outputs"]
                        assert outputs[0]["shape"][0] == body["inputs"][0]["shape"][0], outputs[0]["shape"]
                else:
                    assert response.status_code == 400, f"{breakage}: {response.status_code} {response.content[:200]!r}"

            findings.send(breakage, case, expect)
        return send

    run = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck),
                   phases=(Phase.generate,), verbosity=hypothesis.Verbosity.quiet, max_examples=2)
    for breakage in BREAKAGES:
        _run(f"v2 {model} {breakage}", v2_bodies(shape, input_name, breakage), run, sender(breakage))
    print(f"v2 {model}: statuses by breakage {seen}")
    if findings.failures:
        pytest.fail(f"{len(findings.failures)} failing v2 bodies for {model}:\n\n"
                    + "\n\n".join(findings.failures[:MAX_REPORTED]), pytrace=False)
    assert set(seen) == set(BREAKAGES)


# ---- the same run against a server that wants an API key ---------------------------------------------------------

KEYED_OPERATIONS = tuple(label for label in OPERATIONS if label.split()[1].startswith(
    ("/models", "/predict", "/segment", "/robustness", "/evaluations", "/v2/models", "/v2/repository")))
KEYED_MAX_EXAMPLES = 10


@pytest.fixture(scope="session")
def keyed_schema(strict_server: LiveServer) -> schemathesis.BaseSchema:
    """The strict server's schema (it wants ``Authorization: Bearer <key>``; the schema itself is open)."""
    config = schemathesis.Config.from_dict({
        "seed": FUZZ_SEED, "generation": {"max-examples": KEYED_MAX_EXAMPLES},
        "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]}},
    })
    return schemathesis.openapi.from_url(strict_server.url + "/openapi.json", config=config)


def refused_without_the_key(response: Any) -> None:
    """Without the key, a keyed route answers 401, whatever else is wrong with the request."""
    assert response.status_code == 401, f"{response.status_code} without the API key: {response.content[:200]!r}"


@pytest.mark.parametrize("label", KEYED_OPERATIONS)
def test_no_server_errors_with_an_api_key(keyed_schema, strict_server, label):
    """The keyed server, fuzzed with the key (every answer a 2xx-4xx or a deliberate refusal), and every coverage
    case sent once more without it (always 401)."""
    operation = keyed_schema.find_operation_by_label(label)
    keyed = Findings(strict_server, headers={"Authorization": f"Bearer {API_KEY}"})
    anonymous = Findings(strict_server)
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    generation = keyed_schema.config.generation_for(operation=operation, phase="coverage")
    for case in keyed_schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=generation):
        keyed.send("coverage", case)
        if case.method.upper() == operation.method.upper():  # another method is a 405 before any key check
            anonymous.send("coverage without key", case, refused_without_the_key)
    run = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), phases=(Phase.generate,),
                   verbosity=hypothesis.Verbosity.quiet, max_examples=KEYED_MAX_EXAMPLES)
    fuzz = st.one_of([operation.as_strategy(mode) for mode in modes])
    _run(f"keyed {label}", fuzz, run, lambda case: keyed.send("fuzzing", case))
    failures = keyed.failures + anonymous.failures
    print(f"keyed {label}: sent {keyed.sent} with the key, {anonymous.sent} without, {len(failures)} failing")
    if failures:
        pytest.fail(f"{len(failures)} failing requests to {label} on the keyed server, the first {MAX_REPORTED}:\n\n"
                    + "\n\n".join(failures[:MAX_REPORTED]), pytrace=False)


def test_every_operation_is_fuzzed(api_schema):
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS), "update OPERATIONS in this file to match /openapi.json"


def test_checks_tell_deliberate_refusals_from_server_errors():
    """The two checks above, on hand-made answers (no server)."""

    def answer(status: int, body: object, content_type: str = "application/json") -> SimpleNamespace:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return SimpleNamespace(status_code=status, content=content, headers={"content-type": [content_type]})

    predict, ready = (SimpleNamespace(operation=SimpleNamespace(path=path)) for path in ("/predict", "/ready"))
    for status, code in ((503, "queue_full"), (503, "overloaded"), (503, "model_loading"), (504, "deadline_exceeded")):
        deliberate_refusals_only(None, answer(status, {"error": code, "detail": "x"}), predict)
    deliberate_refusals_only(None, answer(503, {"ready": False}), ready)
    for status, code in ((503, "inference_failed"), (503, "model_unhealthy"), (504, "queue_full"), (503, None)):
        with pytest.raises(AssertionError, match="not a deliberate refusal"):
            deliberate_refusals_only(None, answer(status, {"error": code, "detail": "x"}), predict)

    error_body_is_json(None, answer(200, b"plain", "text/plain"), predict)
    error_body_is_json(None, answer(422, {"error": "invalid_parameter", "detail": "n: ..."}), predict)
    with pytest.raises(AssertionError, match="not JSON"):
        error_body_is_json(None, answer(500, b"Internal Server Error", "text/plain"), predict)
    for body in ({"detail": [{"loc": ["query", "n"]}]}, {"error": "x"}, ["error", "detail"]):
        with pytest.raises(AssertionError, match="is not"):
            error_body_is_json(None, answer(400, body), predict)
