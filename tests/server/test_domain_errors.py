"""One table per transport maps every kind of serving error: HTTP statuses and headers, gRPC statuses."""

from __future__ import annotations

import grpc
import pytest

from server import domain_errors as de
from server.errors import http_headers, http_status
from server.kserve_grpc import grpc_status

KINDS = [kind for kind in vars(de).values() if isinstance(kind, type) and issubclass(kind, de.ServingError)
         and kind is not de.ServingError]
EXPECTED = {  # kind -> (HTTP status, gRPC status): the answers the routes gave before the kinds existed
    de.Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    de.NotFound: (404, grpc.StatusCode.NOT_FOUND),
    de.InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    de.InvalidParameter: (422, grpc.StatusCode.INVALID_ARGUMENT),
    de.TooLarge: (413, grpc.StatusCode.INVALID_ARGUMENT),
    de.Shed: (503, grpc.StatusCode.RESOURCE_EXHAUSTED),
    de.Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
    de.ModelBroken: (500, grpc.StatusCode.INTERNAL),
    de.PastDeadline: (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    de.Conflict: (409, grpc.StatusCode.FAILED_PRECONDITION),
    de.LoadFailed: (400, grpc.StatusCode.FAILED_PRECONDITION),
    de.ClientGone: (499, grpc.StatusCode.CANCELLED),
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_every_kind_has_an_http_and_a_grpc_status(kind):
    error = kind() if kind is de.ClientGone else kind("some_code", "some detail")
    assert (http_status(error), grpc_status(error)) == EXPECTED[kind]


def test_the_table_covers_exactly_the_kinds():
    assert set(EXPECTED) == set(KINDS)


def test_retry_hints_and_the_bearer_challenge_become_headers():
    assert http_headers(de.Shed("queue_full", "full", retry_after=3)) == {"Retry-After": "3"}
    assert http_headers(de.Unauthenticated("missing_api_key", "key")) == {"WWW-Authenticate": "Bearer"}
    assert http_headers(de.NotFound("unknown_model", "no")) == {}


def test_a_subclass_of_a_kind_answers_as_that_kind():
    class QueueGone(de.Shed):
        pass

    assert (http_status(QueueGone("x", "y")), grpc_status(QueueGone("x", "y"))) == \
        (503, grpc.StatusCode.RESOURCE_EXHAUSTED)
