"""Every error leaves the server as JSON ``{"error": short_code, "detail": human text}``."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from server import domain_errors as de
from server.images import ImageRejectedError
from server.responses import JSONResponse

log = logging.getLogger("server.errors")

# Short codes for plain HTTP errors raised by the framework itself (unknown path, wrong method...).
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    500: "internal_error",
    503: "unavailable",
    504: "deadline_exceeded",
}


# The HTTP status of each kind of serving error (the first of an error's classes found here).
HTTP_STATUS: dict[type[de.ServingError], int] = {
    de.Unauthenticated: 401,
    de.NotFound: 404,
    de.InvalidInput: 400,
    de.InvalidParameter: 422,
    de.TooLarge: 413,
    de.Shed: 503,
    de.Unavailable: 503,
    de.ModelBroken: 500,
    de.PastDeadline: 504,
    de.Conflict: 409,
    de.LoadFailed: 400,
    de.ClientGone: 499,  # nginx's code for a client that left; never sent
}


def http_status(error: de.ServingError) -> int:
    """The HTTP status a serving error is answered with."""
    return next(HTTP_STATUS[kind] for kind in type(error).__mro__ if kind in HTTP_STATUS)


class ApiError(HTTPException):
    """An HTTP error with a short machine code and a human detail."""

    def __init__(self, status_code: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code, detail, dict(headers) if headers else None)
        self.code = code


def error_body(code: str, detail: str) -> dict[str, str]:
    """The JSON body of every error response."""
    return {"error": code, "detail": detail}


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON error response."""
    return JSONResponse(error_body(code, detail), status_code=status, headers=dict(headers) if headers else None)


def _allowed_values(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return f" (allowed: {ctx['expected']})"
    words = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
    bounds = [f"{word} {ctx[key]}" for key, word in words if key in ctx]
    return f" (allowed: {' and '.join(bounds)})" if bounds else ""


def describe_validation_error(exc: RequestValidationError) -> str:
    """One readable sentence per invalid field: where, what was given, what is allowed."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("query", "path", "header", "body")]
        where = ".".join(loc) or "request"
        given = f" (got {error['input']!r})" if "input" in error and not isinstance(error["input"], dict) else ""
        parts.append(f"{where}: {error.get('msg', 'invalid')}{given}{_allowed_values(error)}")
    return "; ".join(parts)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = exc.code if isinstance(exc, ApiError) else STATUS_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


def http_headers(error: de.ServingError) -> dict[str, str]:
    """The headers an HTTP answer to a serving error carries: Retry-After, the Bearer challenge of a 401."""
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    if isinstance(error, de.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, de.ServingError)
    return error_response(http_status(exc), exc.code, exc.detail, http_headers(exc))


async def _rejected_image(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageRejectedError)
    return error_response(exc.status, exc.code, exc.detail)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_parameter", describe_validation_error(exc))


def new_error_id() -> str:
    """A short id that ties a client's error answer to the server's log line."""
    return uuid.uuid4().hex[:12]


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    error_id = new_error_id()
    log.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error",
                          f"the server hit an unexpected error; it has been logged as error id {error_id}")


def register_error_handlers(app: FastAPI) -> None:
    """JSON handlers for HTTP errors, serving errors (by HTTP_STATUS), rejected images, validation errors (422
    with allowed values) and anything else (500)."""
    app.add_exception_handler(HTTPException, _api_error)
    app.add_exception_handler(de.ServingError, _serving_error)
    app.add_exception_handler(ImageRejectedError, _rejected_image)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


def api_key_error(api_key: str | None, authorization: str) -> de.Unauthenticated | None:
    """The refusal of a request whose ``Authorization`` header (gRPC: metadata) does not carry ``Bearer
    <api_key>``; None when it does (or when no key is configured)."""
    if api_key is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return de.Unauthenticated("missing_api_key", "this server requires 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        return de.Unauthenticated("invalid_api_key", "the bearer token does not match the server's API key")
    return None
