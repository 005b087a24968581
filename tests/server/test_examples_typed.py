"""The documented examples are instances of the response shapes, and the shapes' schemas reject wrong bodies."""

from __future__ import annotations

import copy
import json
import typing
from typing import Any

import pytest
from typing_extensions import is_typeddict

from server.routes import examples
from server.shapes.common import ErrorBody
from server.shapes.inference import PredictResponse, SegmentResponse
from server.shapes.kserve import RepositoryRow, V2InferResponse, V2ModelMetadata
from server.shapes.robustness import (
    MultiLabelRobustness,
    RobustnessResponse,
    SegmenterRobustness,
    SingleLabelRobustness,
)
from server.shapes.schema import json_schema
from server.shapes.status import Health, ModelsResponse, Readiness
from tests.server.schema_check import as_client_sees, violations


def _is_shape(hint: Any) -> bool:
    return is_typeddict(hint) or (typing.get_origin(hint) is list and is_typeddict(typing.get_args(hint)[0]))


# Every module-level example of server/routes/examples.py annotated with a shape, found by its annotation.
TYPED_EXAMPLES = {name: hint for name, hint in typing.get_type_hints(examples).items()
                  if not name.startswith("_") and _is_shape(hint)}


@pytest.mark.parametrize("name", sorted(TYPED_EXAMPLES))
def test_every_typed_example_is_an_instance_of_its_shape(name: str) -> None:
    value = as_client_sees(getattr(examples, name))
    assert violations(json_schema(TYPED_EXAMPLES[name]), value) == []


def test_the_typed_examples_cover_the_main_answers() -> None:
    shapes = set(TYPED_EXAMPLES.values())
    assert {PredictResponse, SegmentResponse, MultiLabelRobustness, SingleLabelRobustness, SegmenterRobustness,
            ModelsResponse, Health, Readiness, V2ModelMetadata, V2InferResponse, list[RepositoryRow]} <= shapes


def test_the_robustness_examples_each_fit_the_union_the_route_documents() -> None:
    schema = json_schema(RobustnessResponse)
    for value in (examples.ROBUSTNESS_EXAMPLE, examples.ROBUSTNESS_SOFTMAX_EXAMPLE,
                  examples.ROBUSTNESS_SEGMENTER_EXAMPLE, examples.ROBUSTNESS_EXPLAIN_EXAMPLE,
                  examples.ROBUSTNESS_CORRUPTION_EXAMPLE):
        assert violations(schema, as_client_sees(value)) == []


@pytest.mark.parametrize("status", sorted(examples.ERRORS))
def test_every_documented_error_carries_the_error_schema_and_an_instance_of_it(status: int) -> None:
    content = examples.ERRORS[status]["content"]["application/json"]
    assert content["schema"] == json_schema(ErrorBody)
    assert violations(content["schema"], content["example"]) == []


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    changed = copy.deepcopy(as_client_sees(body))
    node = changed
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return changed


# Bodies that are wrong in one place each, and the shape that must refuse them.
WRONG = {
    "predict without timing": (PredictResponse, _without(examples.PREDICT_EXAMPLE, "timing")),
    "predict with a key no shape names": (PredictResponse, {**examples.PREDICT_EXAMPLE, "labelz": []}),
    "predict with an unknown activation": (PredictResponse, _set(examples.PREDICT_EXAMPLE, ("activation",), "relu")),
    "predict with a label score as text": (PredictResponse,
                                           _set(examples.PREDICT_EXAMPLE, ("labels", 0, "score"), "0.9")),
    "a fractional batch size": (PredictResponse, _set(examples.PREDICT_EXAMPLE, ("timing", "batch_size"), 1.5)),
    "segment instances without L": (SegmentResponse, _set(examples.SEGMENT_JSON_EXAMPLE, ("classes", 0, "instances"),
                                                          {"count": 1, "S": 0, "M": 0})),
    "a softmax report that says sigmoid": (RobustnessResponse, _set(examples.ROBUSTNESS_SOFTMAX_EXAMPLE,
                                                                    ("activation",), "sigmoid")),
    "a sigmoid report with a softmax figure": (RobustnessResponse, {**examples.ROBUSTNESS_EXAMPLE,
                                                                    "top1_retention": 0.5}),
    "a segmenter report without its masks": (RobustnessResponse,
                                             _without(examples.ROBUSTNESS_SEGMENTER_EXAMPLE, "masks")),
    "a model of an unknown task": (ModelsResponse, _set(examples.MODELS_EXAMPLE, ("models", 0, "task"), "detection")),
    "a v2 output of another datatype": (V2InferResponse, _set(examples.V2_INFER_RESPONSE,
                                                              ("outputs", 0, "datatype"), "INT64")),
    "a repository row in a state Triton lacks": (list[RepositoryRow],
                                                 _set(examples.REPOSITORY_INDEX, (0, "state"), "WARMING")),
    "an error without its detail": (ErrorBody, {"error": "queue_full", "detail": None}),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_a_wrong_body_is_refused(case: str) -> None:
    shape, body = WRONG[case]
    assert violations(json_schema(shape), as_client_sees(body)) != []


def test_the_schemas_are_self_contained_for_the_openapi_document() -> None:
    for shape in {*TYPED_EXAMPLES.values(), RobustnessResponse, ErrorBody}:
        text = json.dumps(json_schema(shape))
        assert "$ref" not in text and "$defs" not in text, shape


def test_a_schema_is_a_copy_that_callers_may_change() -> None:
    json_schema(PredictResponse)["properties"].clear()
    assert "labels" in json_schema(PredictResponse)["properties"]
