"""JSON responses through orjson: the data ``json.dumps`` gave, always valid JSON, non-finite scores refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from starlette.responses import JSONResponse as StarletteJSONResponse

from server.errors import ApiError, error_response
from server.responses import JSONResponse, dumps
from server.routes.examples import PREDICT_EXAMPLE, ROBUSTNESS_EXAMPLE, ROBUSTNESS_SEGMENTER_EXAMPLE
from server.routes.predict import check_finite_scores


@pytest.mark.parametrize("body", [PREDICT_EXAMPLE, ROBUSTNESS_EXAMPLE, ROBUSTNESS_SEGMENTER_EXAMPLE,
                                  {"name": "Grüße, 猫 ✓", 3: [1e-05, 2.5e16, -0.0, 123456789012], True: None,
                                   "nested": {"tuple": (1, 2.5), "empty": {}}}])
def test_the_body_is_the_data_json_dumps_gave(body):
    old, new = StarletteJSONResponse(body), JSONResponse(body)
    assert json.loads(new.body) == json.loads(old.body)  # int and bool keys become strings in both
    assert new.media_type == old.media_type == "application/json"
    assert new.headers["content-length"] == str(len(new.body))
    assert b" " not in dumps({"a": [1, 2], "b": {"c": None}})  # compact, as Starlette's


def test_status_and_headers_are_kept():
    response = JSONResponse({"error": "queue_full"}, status_code=503, headers={"Retry-After": "2"})
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    error = error_response(413, "image_too_large", "3000x2000 = 6,000,000 pixels", {"X-Limit": "1"})
    assert isinstance(error, JSONResponse) and error.status_code == 413 and error.headers["x-limit"] == "1"
    assert json.loads(error.body) == {"error": "image_too_large", "detail": "3000x2000 = 6,000,000 pixels"}


def test_non_finite_numbers_become_null_so_the_body_stays_valid_json():
    body = dumps({"nan": math.nan, "inf": [math.inf, -math.inf], "fine": 0.5})

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    assert json.loads(body, parse_constant=refuse) == {"nan": None, "inf": [None, None], "fine": 0.5}


def test_what_is_not_json_is_still_an_error():
    with pytest.raises(TypeError):
        dumps({"array": np.zeros(2, dtype=np.float32)})
    with pytest.raises(TypeError):
        dumps({"big": 2**70})  # past 64 bits: refused, never truncated


def test_predict_refuses_non_finite_scores_as_v2_does():
    check_finite_scores(np.array([0.1, 0.9], dtype=np.float32), "m")
    for bad in (math.nan, math.inf):
        with pytest.raises(ApiError) as info:
            check_finite_scores(np.array([0.1, bad], dtype=np.float32), "m")
        assert (info.value.status_code, info.value.code) == (500, "non_finite_output")
        assert "'m' produced NaN or infinite scores" in info.value.detail
