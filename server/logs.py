"""Structured logs: every record is one JSON line; each request adds one ``server.access`` line."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from opentelemetry import trace
from starlette.requests import Request

ACCESS_LOGGER = "server.access"
SCOPE_KEY = "server.log"  # per-request fields that routes add (model, batch size...) for the access line


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; ``extra={"fields": {...}}`` is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for one record."""
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["msg"] = record.getMessage()
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None and "trace_id" not in line:
            line["trace_id"], line["span_id"] = trace_id, getattr(record, "span_id", None)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` to records logged inside a request's span (``server.tracing``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag the record with the current span's ids, if any; never drops it."""
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id, record.span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        return True


def configure_logging(level: str = "info") -> None:
    """Send every logger (ours and uvicorn's) to stderr as JSON lines."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level {level!r} must be one of debug, info, warning, error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by our one line per request


def annotate(request: Request, **fields: Any) -> None:
    """Add fields (model, batch_size, ...) to this request's access-log line."""
    request.scope.setdefault(SCOPE_KEY, {}).update(fields)
