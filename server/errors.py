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
    """JSON handlers for HTTP errors, rejected images, validation errors (422 with allowed values) and anything
    else (500)."""
    app.add_exception_handler(HTTPException, _api_error)
    app.add_exception_handler(ImageRejectedError, _rejected_image)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


def api_key_error(api_key: str | None, authorization: str) -> ApiError | None:
    """The 401 for a request whose ``Authorization`` header does not carry ``Bearer <api_key>``; None when it does
    (or when no key is configured)."""
    if api_key is None:
        return None
    scheme, _, token = authorization.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token:
        return ApiError(401, "missing_api_key", "this server requires 'Authorization: Bearer <key>'", challenge)
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        return ApiError(401, "invalid_api_key", "the bearer token does not match the server's API key", challenge)
    return None
