"""The live server's /openapi.json carries the shapes' schemas, and its real answers are instances of them."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from server.routes.examples import ERRORS
from server.shapes.common import ErrorBody
from server.shapes.inference import PredictResponse, SegmentResponse
from server.shapes.kserve import RepositoryRow, V2InferResponse, V2Live, V2ModelMetadata, V2ModelReady, V2ServerMetadata
from server.shapes.robustness import (
    MultiLabelRobustness,
    RobustnessResponse,
    SegmenterRobustness,
    SingleLabelRobustness,
)
from server.shapes.schema import json_schema
from server.shapes.status import Health, IndexResponse, ModelsResponse, NotReady, Readiness
from tests.server.conftest import CLASSIFIER, SEGMENTER, SEGMENTER_SIZE, SOFTMAX_CLASSIFIER
from tests.server.oracle import png_bytes, random_rgb
from tests.server.schema_check import violations

# (method, path, status) of the OpenAPI document -> the shape its JSON schema is generated from
DOCUMENTED = {
    ("get", "/", "200"): IndexResponse,
    ("get", "/health", "200"): Health,
    ("get", "/ready", "200"): Readiness,
    ("get", "/ready", "503"): NotReady,
    ("get", "/models", "200"): ModelsResponse,
    ("post", "/predict", "200"): PredictResponse,
    ("post", "/segment", "200"): SegmentResponse,
    ("post", "/robustness", "200"): RobustnessResponse,
    ("get", "/v2", "200"): V2ServerMetadata,
    ("get", "/v2/health/live", "200"): V2Live,
    ("get", "/v2/health/ready", "200"): Readiness,
    ("get", "/v2/health/ready", "503"): NotReady,
    ("get", "/v2/models/{model}", "200"): V2ModelMetadata,
    ("get", "/v2/models/{model}/ready", "200"): V2ModelReady,
    ("post", "/v2/models/{model}/infer", "200"): V2InferResponse,
    ("post", "/v2/repository/index", "200"): list[RepositoryRow],
    **{(method, path, str(status)): ErrorBody for method, path in (("post", "/predict"), ("post", "/segment"),
                                                                   ("post", "/robustness"))
       for status in ERRORS},
}


@pytest.fixture(scope="module")
def spec(client: httpx.Client) -> dict[str, Any]:
    """The live main server's OpenAPI document."""
    return client.get("/openapi.json").json()


def documented(spec: dict[str, Any], method: str, path: str, status: str) -> dict[str, Any]:
    """The JSON schema the document gives for one answer."""
    return spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


@pytest.mark.parametrize("key", sorted(DOCUMENTED, key=str), ids=" ".join)
def test_the_document_carries_each_shapes_generated_schema(spec, key) -> None:
    assert documented(spec, *key) == json_schema(DOCUMENTED[key])


def test_the_examples_stay_beside_the_schemas(spec) -> None:
    paths = spec["paths"]
    assert "example" in paths["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    assert "example" in paths["/models"]["get"]["responses"]["200"]["content"]["application/json"]
    robustness = paths["/robustness"]["post"]["responses"]["200"]["content"]["application/json"]
    assert set(robustness["examples"]) == {"sigmoid", "softmax", "segmenter", "explain", "corruption"}
    assert paths["/predict"]["post"]["responses"]["404"]["content"]["application/json"]["example"]["error"] == \
        "unknown_model"


IMAGE = {"files": {"file": ("image.png", png_bytes(random_rgb(96, 80, seed=41)))}}
SEGMENTER_IMAGE = png_bytes(random_rgb(SEGMENTER_SIZE, SEGMENTER_SIZE, seed=42))
TRUTH = png_bytes(np.random.default_rng(0).integers(0, 2, size=(SEGMENTER_SIZE, SEGMENTER_SIZE)).astype(np.uint8))


def v2_request(size: int = 128) -> dict[str, Any]:
    """A v2 infer request (JSON data) for the classifier, with an id."""
    data = np.random.default_rng(3).random(3 * size * size).round(3).tolist()
    return {"json": {"id": "7", "inputs": [{"name": "images", "shape": [1, 3, size, size], "datatype": "FP32",
                                            "data": data}]}}


# A real request per answer: (documented route, status), the request, and the exact shape it must fit.
LIVE = {
    "predict": (("post", "/predict"), "200", {"params": {}, **IMAGE}, PredictResponse),
    "predict scores": (("post", "/predict"), "200", {"params": {"scores": "true", "top_k": 3}, **IMAGE},
                       PredictResponse),
    "predict softmax": (("post", "/predict"), "200", {"params": {"model": SOFTMAX_CLASSIFIER}, **IMAGE},
                        PredictResponse),
    "segment json": (("post", "/segment"), "200", {"params": {"model": SEGMENTER, "format": "json"}, **IMAGE},
                     SegmentResponse),
    "robustness sigmoid, masks returned": (("post", "/robustness"), "200",
                                           {"params": {"n": 2, "return_masks": "true"}, **IMAGE},
                                           MultiLabelRobustness),
    "robustness explain": (("post", "/robustness"), "200",
                           {"params": {"n": 8, "mask_ratio": "b3", "explain": "true"}, **IMAGE},
                           MultiLabelRobustness),
    "robustness corruption": (("post", "/robustness"), "200",
                              {"params": {"n": 2, "corruption": "fog", "severity": 1}, **IMAGE}, MultiLabelRobustness),
    "robustness softmax": (("post", "/robustness"), "200", {"params": {"n": 2, "model": SOFTMAX_CLASSIFIER}, **IMAGE},
                           SingleLabelRobustness),
    "robustness segmenter, truth": (("post", "/robustness"), "200",
                                    {"params": {"n": 2, "model": SEGMENTER},
                                     "files": {"file": ("image.png", SEGMENTER_IMAGE), "truth": ("truth.png", TRUTH)}},
                                    SegmenterRobustness),
    "index": (("get", "/"), "200", {}, IndexResponse),
    "health": (("get", "/health"), "200", {}, Health),
    "ready": (("get", "/ready"), "200", {}, Readiness),
    "models": (("get", "/models"), "200", {}, ModelsResponse),
    "v2 server": (("get", "/v2"), "200", {}, V2ServerMetadata),
    "v2 live": (("get", "/v2/health/live"), "200", {}, V2Live),
    "v2 ready": (("get", "/v2/health/ready"), "200", {}, Readiness),
    "v2 metadata": (("get", "/v2/models/{model}"), "200", {}, V2ModelMetadata),
    "v2 model ready": (("get", "/v2/models/{model}/ready"), "200", {}, V2ModelReady),
    "v2 infer": (("post", "/v2/models/{model}/infer"), "200", v2_request(), V2InferResponse),
    "repository index": (("post", "/v2/repository/index"), "200", {}, list[RepositoryRow]),
    "unknown model": (("post", "/predict"), "404", {"params": {"model": "nope"}, **IMAGE}, ErrorBody),
    "bad parameter": (("post", "/robustness"), "422", {"params": {"n": 0}, **IMAGE}, ErrorBody),
    "not an image": (("post", "/segment"), "400", {"files": {"file": ("x.png", b"not an image")}}, ErrorBody),
}


@pytest.mark.parametrize("case", list(LIVE))
def test_a_live_answer_is_an_instance_of_its_documented_schema(client, spec, case: str) -> None:
    (method, path), status, request, shape = LIVE[case]
    response = client.request(method.upper(), path.replace("{model}", CLASSIFIER), **request)
    assert str(response.status_code) == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert violations(documented(spec, method, path, status), body) == []
    assert violations(json_schema(shape), body) == []  # the kind of answer expected, not just any in a union
