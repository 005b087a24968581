"""Request tracing with OpenTelemetry: W3C trace context in, one SERVER span per request, and its stages as children.

Each app has its own ``TracerProvider`` (never the global one): sampled ``ParentBased(TraceIdRatioBased(r))``,
exporting over OTLP/HTTP when ``--otlp-endpoint`` is set. Without an endpoint nothing is exported, but the trace
context still works: an incoming ``traceparent`` is continued, the answer echoes the server span's, and logs carry
its trace id.

The seam is transport-neutral: ``request_span(scope, name, carrier)`` opens the root span from any carrier of
lower-case header names (HTTP headers, gRPC metadata) and keeps it in ``scope``, a plain dict (an ASGI scope, or
one a gRPC servicer builds). The pipeline then records its stages into the same dict with ``stage``: admission,
receive, decode, queue, inference, postprocess. Their times are the ones the answer's ``timing`` fields report
(measured once, on the monotonic clock), placed on the root span's timeline, so a trace and an answer agree.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.logs import SCOPE_KEY
from server.settings import Settings

TRACE_KEY = "server.trace"  # the request's RequestTrace, in its scope
START_KEY = "server.start"  # time.monotonic() at arrival (server.middleware re-exports it)
CARRIER_KEYS = ("traceparent", "tracestate")
SERVICE_NAME = "occlusion-serve"
_PROPAGATOR = TraceContextTextMapPropagator()


def format_traceparent(span: Span) -> str:
    """The W3C ``traceparent`` value naming ``span``."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@dataclass(slots=True)
class RequestTrace:
    """One request's root span and the clock that places its stages: ``start`` (monotonic) is ``start_ns``."""

    span: Span
    tracer: trace.Tracer
    start: float
    start_ns: int
    detailed: bool  # whether stage spans are worth making (sampled, and some exporter will see them)
    inference_end: float | None = None  # monotonic instant the last inference result reached the request
    stages: set[str] = field(default_factory=set)

    def ns(self, instant: float) -> int:
        """A monotonic instant as epoch nanoseconds on this request's timeline."""
        return self.start_ns + round((instant - self.start) * 1e9)

    def stage(self, name: str, start: float, end: float, attributes: Mapping[str, Any] | None = None,
              error: str | None = None) -> None:
        """A child span from ``start`` to ``end`` (monotonic seconds)."""
        self.stages.add(name)
        if not self.detailed:
            return
        parent = trace.set_span_in_context(self.span)
        child = self.tracer.start_span(name, parent, SpanKind.INTERNAL, attributes, start_time=self.ns(start))
        if error is not None:
            child.set_status(Status(StatusCode.ERROR, error))
            child.set_attribute("error.type", error)
        child.end(end_time=self.ns(max(start, end)))


class Tracing:
    """An app's tracer: its own provider, sampler and exporter (``exporter`` given: spans go to it at once)."""

    def __init__(self, sample_ratio: float = 1.0, exporter: SpanExporter | None = None, batch: bool = False) -> None:
        self.provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
                                       resource=Resource.create({"service.name": SERVICE_NAME}),
                                       shutdown_on_exit=False)
        self.exporting = exporter is not None
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("server")

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing:
        """OTLP/HTTP export in batches to ``--otlp-endpoint`` when set; no export otherwise."""
        exporter = None
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
        return cls(settings.trace_sample_ratio, exporter, batch=True)

    def shutdown(self) -> None:
        """Export what is still buffered, then stop the exporter."""
        self.provider.shutdown()

    @contextlib.contextmanager
    def request_span(self, scope: MutableMapping[str, Any], name: str, carrier: Mapping[str, str],
                     attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
        """The request's SERVER span, continuing the trace in ``carrier`` (a malformed one starts a new trace),
        from ``scope[START_KEY]`` (set now if absent) until the block ends; current while it runs, kept in
        ``scope`` for ``stage``, its ids added to the request's log fields. An exception escaping the block marks
        it ERROR."""
        start = scope.get(START_KEY)
        if start is None:
            start = scope[START_KEY] = time.monotonic()
        start_ns = time.time_ns() - round((time.monotonic() - start) * 1e9)
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        span = self.tracer.start_span(name, parent, SpanKind.SERVER, attributes, start_time=start_ns)
        ctx = span.get_span_context()
        scope[TRACE_KEY] = RequestTrace(span, self.tracer, start, start_ns, self.exporting and span.is_recording())
        fields = scope.get(SCOPE_KEY)
        if fields is None:
            fields = scope[SCOPE_KEY] = {}
        fields["trace_id"] = f"{ctx.trace_id:032x}"
        fields["span_id"] = f"{ctx.span_id:016x}"
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            if span.is_recording():
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            otel_context.detach(token)
            span.end()


def http_carrier(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The trace-context headers of an ASGI request (names are lower-case there)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers
            if name == b"traceparent" or name == b"tracestate"}


def request_trace(scope: Mapping[str, Any]) -> RequestTrace | None:
    """The request's trace, if it has one."""
    return scope.get(TRACE_KEY)


def stage(scope: Mapping[str, Any], name: str, start: float, end: float,
          attributes: Mapping[str, Any] | None = None, error: str | None = None) -> None:
    """Record a stage of the request from ``start`` to ``end`` (monotonic seconds); nothing for an untraced one."""
    traced = scope.get(TRACE_KEY)
    if traced is not None:
        traced.stage(name, start, end, attributes, error)


def set_attributes(scope: Mapping[str, Any], **attributes: Any) -> None:
    """Attributes of the request's root span (model, precision, batch size...), for an exported request."""
    traced = scope.get(TRACE_KEY)
    if traced is not None and traced.detailed:
        traced.span.set_attributes(attributes)


def inference_done(scope: Mapping[str, Any], end: float) -> None:
    """Note when the request got its model outputs: its postprocess stage starts there."""
    traced = scope.get(TRACE_KEY)
    if traced is not None:
        traced.inference_end = end


def postprocess(scope: Mapping[str, Any], end: float) -> None:
    """The postprocess stage, from the model outputs to ``end``, unless already recorded."""
    traced = scope.get(TRACE_KEY)
    if traced is not None and traced.inference_end is not None and "postprocess" not in traced.stages:
        traced.stage("postprocess", traced.inference_end, end)


def finish(scope: Mapping[str, Any], status: int, error: str | None = None, name: str | None = None,
           attributes: Mapping[str, Any] | None = None) -> None:
    """The request's outcome on its root span, for an exported request: its final ``name`` (e.g. ``POST
    /predict``), ``attributes`` (HTTP status and route...), and for a failure (``status`` >= 400, or a gRPC
    code mapped to one) ERROR with the answer's error code."""
    traced = scope.get(TRACE_KEY)
    if traced is None or not traced.detailed:
        return
    span = traced.span
    if name is not None:
        span.update_name(name)
    if attributes:
        span.set_attributes(attributes)
    if status >= 400:
        code = error or str(status)
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, code))
