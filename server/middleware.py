"""Pure ASGI middleware: request limits (concurrent requests, URI length, streaming uploads), and one log line
plus metrics per request."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import tracing
from server.admission import InflightBudget, OverloadedError, close_request_ticket, request_ticket
from server.errors import ApiError, api_key_error, error_response, http_headers, http_status
from server.logs import ACCESS_LOGGER, SCOPE_KEY
from server.prometheus import ServerMetrics
from server.tracing import START_KEY, Tracing, format_traceparent, http_carrier

access_log = logging.getLogger(ACCESS_LOGGER)

# Request limits. uvicorn's httptools parser buffers a request line of any length, so the URI limit is ours.
MAX_URI_BYTES = 8192  # path plus query string, as sent (percent-encoded)
MAX_MODEL_NAME_LENGTH = 64  # model_store.manifest.NAME_PATTERN: one leading character and up to 63 more


def too_large(limit: int, seen: str, source: str = "--max-body-bytes") -> ApiError:
    """The 413 error for a body over the upload limit (``source``: where the limit comes from)."""
    return ApiError(413, "payload_too_large", f"the request body is {seen}; the limit is {limit:,} bytes ({source})")


def uri_too_long(limit: int, seen: int) -> str:
    """The detail of the 414 for a URI over the limit (the URI itself is not echoed)."""
    return f"the request URI (path and query string) is {seen:,} bytes; the limit is {limit:,} bytes"


UNLIMITED_PATHS = ("/health", "/v2/health/live", "/metrics")  # probes answer however busy the server is
# Routes that cost work: with --api-key the key is checked here, before a body is read or parsed.
KEYED_PREFIXES = ("/predict", "/segment", "/robustness", "/evaluations", "/models", "/v2/models")
JSON_BODY_LIMITS = {"/evaluations": 16 * 1024}  # JSON bodies: a few KiB, not the image upload limit


def host_allowed(host_header: bytes, patterns: tuple[str, ...]) -> bool:
    """Whether a Host header names an allowed host (its port ignored; ``*.example.com`` covers subdomains)."""
    host = host_header.decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return bool(host) and any(pattern == "*" or fnmatch.fnmatchcase(host, pattern.lower()) for pattern in patterns)


def body_timeout(seconds: float, received: int) -> ApiError:
    """The 408 for a body that did not arrive within the read timeout (the rest of it is never read)."""
    return ApiError(408, "request_timeout", f"the request body did not arrive within {seconds:g} s "
                    f"(--read-timeout-s); {received:,} bytes came", headers={"Connection": "close"})


def keyed(path: str) -> bool:
    """Whether ``path`` belongs to a route that needs the API key."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in KEYED_PREFIXES)


class RequestLimitsMiddleware:
    """Refuse requests past ``max_concurrent`` in flight (503, probes exempt), a URI over ``max_uri_bytes`` (414)
    before any route parses it, a Host outside ``hosts`` (400, probes exempt), a missing API key (401), and bodies
    over ``max_bytes`` (413): at once if Content-Length says so, else as soon as the stream passes it.

    Each body chunk is reserved in the in-flight ``budget`` as it arrives (503 ``overloaded`` past it), so a client
    holds only what it has sent, declared or chunked; and the whole body must arrive within ``read_timeout_s``
    of its headers (408, connection closed).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_uri_bytes: int = MAX_URI_BYTES,
                 max_concurrent: int | None = None, api_key: str | None = None,
                 budget: InflightBudget | None = None, read_timeout_s: float = 30.0,
                 hosts: tuple[str, ...] = ("*",)) -> None:
        self.app, self.max_bytes, self.max_uri_bytes = app, max_bytes, max_uri_bytes
        self.max_concurrent, self.in_flight, self.api_key = max_concurrent, 0, api_key
        self.budget, self.read_timeout_s, self.hosts = budget, read_timeout_s, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request against the concurrency limit, then apply the URI and body limits."""
        if scope["type"] != "http" or self.max_concurrent is None or scope["path"] in UNLIMITED_PATHS:
            await self._limited(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrent:
            detail = f"{self.in_flight} requests are in flight; the limit is {self.max_concurrent} (--max-concurrent)"
            await error_response(503, "too_many_requests", detail, {"Retry-After": "1"})(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 414 for a long URI; wrap ``receive`` so that reading past the body limit raises a 413 ApiError."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        uri_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if uri_bytes > self.max_uri_bytes:
            await error_response(414, "uri_too_long", uri_too_long(self.max_uri_bytes, uri_bytes),
                                 {"Connection": "close"})(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.hosts != ("*",) and scope["path"] not in UNLIMITED_PATHS \
                and not host_allowed(headers.get(b"host", b""), self.hosts):
            detail = "the Host header names no host this server answers for (--allowed-hosts)"
            await error_response(400, "invalid_host", detail, {"Connection": "close"})(scope, receive, send)
            return
        if self.api_key is not None and keyed(scope["path"]):
            refused = api_key_error(self.api_key, headers.get(b"authorization", b"").decode("latin-1"))
            if refused is not None:  # before the body is read: an unauthenticated client costs no parsing
                await error_response(http_status(refused), refused.code, refused.detail,
                                     {**http_headers(refused), "Connection": "close"})(scope, receive, send)
                return
        limit = JSON_BODY_LIMITS.get(scope["path"], self.max_bytes)
        source = "JSON bodies of this route" if scope["path"] in JSON_BODY_LIMITS else "--max-body-bytes"
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = too_large(limit, f"{int(declared):,} bytes (Content-Length)", source)
            await error_response(413, error.code, str(error.detail), {"Connection": "close"})(scope, receive, send)
            return
        received = 0
        started = False
        complete = False
        deadline = time.monotonic() + self.read_timeout_s

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # only a disconnect can come now: no deadline on waiting for it
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):  # no extra task, unlike wait_for
                    message = await receive()
            except TimeoutError:
                raise body_timeout(self.read_timeout_s, received) from None
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                complete = not message.get("more_body", False)
                if received > limit:
                    raise too_large(limit, f"over {limit:,} bytes and still streaming", source)
                if self.budget is not None and chunk:
                    ticket = request_ticket(scope, self.budget)  # made by the first chunk: bodiless requests skip it
                    if not ticket.closed:
                        ticket.reserve_bytes(chunk)  # OverloadedError: the route maps it (the middleware, if not)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ApiError as error:  # raised from receive outside any route (no handler saw it)
            if started:
                raise
            await error_response(error.status_code, error.code, str(error.detail), error.headers)(scope, receive,
                                                                                                 send)
        except OverloadedError as error:  # a body chunk over the in-flight budget on a route that does not map it
            if started:
                raise
            await error_response(503, "overloaded", f"{error}; retry later", {"Retry-After": "1"})(scope, receive,
                                                                                                  send)
        finally:
            close_request_ticket(scope)


def route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label set for metrics), or 'unmatched'."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


NOSNIFF = (b"x-content-type-options", b"nosniff")  # browsers never guess a type other than the one sent
# HTML pages without a policy of their own (/docs, /redoc): only this origin's scripts, styles and images; their
# loaders are inline scripts, so inline is allowed, but no other origin is.
CSP = (b"content-security-policy", b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
       b"'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'")


class RequestLogMiddleware:
    """One JSON access line and the request metrics for every HTTP request, errors included; every answer carries
    ``X-Content-Type-Options: nosniff``, and every HTML page a Content-Security-Policy.

    With ``tracing``, each request to a route that costs work (``keyed``) runs in a SERVER span that continues the
    client's W3C ``traceparent`` (``server.tracing``); the answer echoes the span's own ``traceparent`` and the
    access line carries its ``trace_id`` and ``span_id``."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, tracing: Tracing | None = None) -> None:
        self.app, self.metrics, self.tracing = app, metrics, tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request, remember its status, then log and count it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[START_KEY] = time.monotonic()
        scope[SCOPE_KEY] = {}
        if self.tracing is None or not keyed(scope["path"]):
            await self._logged(scope, receive, send)
            return
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with self.tracing.request_span(scope, scope["method"], http_carrier(scope["headers"]), attributes) as span:
            await self._logged(scope, receive, send, format_traceparent(span).encode())

    async def _logged(self, scope: Scope, receive: Receive, send: Send, traceparent: bytes | None = None) -> None:
        start, fields = scope[START_KEY], scope[SCOPE_KEY]
        status = 500
        error: str | None = None

        async def status_send(message: Message) -> None:
            nonlocal status, error
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                added = [] if NOSNIFF[0] in names else [NOSNIFF]
                html = any(name.lower() == b"content-type" and value.startswith(b"text/html")
                           for name, value in headers)
                if html and CSP[0] not in names:
                    added.append(CSP)
                if traceparent is not None:
                    added.append((b"traceparent", traceparent))
                    tracing.postprocess(scope, time.monotonic())  # routes without a timing() call (v2)
                if added:
                    message = {**message, "headers": [*headers, *added]}
            elif traceparent is not None and status >= 400 and error is None:
                error = error_code(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, status_send)
        finally:
            duration = time.monotonic() - start
            route = route_template(scope)
            self.metrics.observe_request(route, status, duration)
            if traceparent is not None:
                tracing.finish(scope, status, error, f"{scope['method']} {route}",
                               {"http.route": route, "http.response.status_code": status})
            if access_log.isEnabledFor(logging.INFO):
                line = {"method": scope["method"], "path": scope["path"], "route": route, "status": status,
                        "duration_ms": round(duration * 1000, 2), **fields}
                access_log.info("request", extra={"fields": line})


def error_code(body: bytes) -> str | None:
    """The ``error`` code of a JSON error answer's body (``{"error": code, ...}``), None for any other body."""
    if not body.startswith(b"{") or len(body) > 65536:
        return None
    with contextlib.suppress(ValueError):
        code = json.loads(body).get("error")
        return code if isinstance(code, str) else None
    return None
