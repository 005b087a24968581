"""Connection-level limits that uvicorn does not enforce itself, and the uvicorn options taken from the settings.

uvicorn's httptools protocol buffers a request line and headers of any length, for as long as the client takes
to send them (its keep-alive timer stops at the first byte). ``limited_protocol`` returns its subclass that
closes a connection whose request head is not complete within ``--read-timeout-s`` (408), or grows past
``MAX_HEAD_BYTES`` (431), and that refuses connections past the connection limit with a JSON 503 before reading
anything. Every answer here is written by hand because no ASGI app has run yet.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.settings import Settings

MAX_HEAD_BYTES = 64 * 1024  # request line plus headers (nginx allows 4 x 8 KiB for the large ones)


def raw_error(status: int, reason: str, code: str, detail: str) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection, with the server's JSON error body."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "x-content-type-options: nosniff\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


class HeadTooLargeError(Exception):
    """A request line and headers over MAX_HEAD_BYTES."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request head, and a connection cap."""

    read_timeout_s = 30.0
    max_connections = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_bytes = 0
        self.refusal: bytes | None = None  # the answer to send instead of uvicorn's 400 when a callback refuses

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection past the cap; otherwise start the clock on its first request head."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            detail = (f"{len(self.connections) - 1} connections are open; the limit is {self.max_connections} "
                      "(--max-connections)")
            self._refuse(503, "Service Unavailable", "too_many_connections", detail)
            return
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._stop_head_clock()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A new request head starts (on a kept-alive connection too): it has until the deadline."""
        super().on_message_begin()
        self.head_bytes = 0
        self._start_head_clock()

    def on_url(self, url: bytes) -> None:
        """Count the request line against the head limit."""
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count each header against the head limit."""
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is in: the body's own deadline (in the ASGI middleware) takes over."""
        self._stop_head_clock()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, unless a callback of ours refused the request with its own."""
        if self.refusal is None:
            super().send_400_response(msg)
            return
        self._stop_head_clock()
        if not self.transport.is_closing():
            self.transport.write(self.refusal)
            self.transport.close()

    def _count(self, nbytes: int) -> None:
        self.head_bytes += nbytes
        if self.head_bytes <= MAX_HEAD_BYTES:
            return
        detail = f"the request line and headers pass {MAX_HEAD_BYTES:,} bytes, the limit"
        self.refusal = raw_error(431, "Request Header Fields Too Large", "headers_too_large", detail)
        raise HeadTooLargeError(detail)  # stops the parser; uvicorn then calls send_400_response

    def _start_head_clock(self) -> None:
        if self.head_timer is None and not self.transport.is_closing():
            self.head_timer = self.loop.call_later(self.read_timeout_s, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its head came in time
        detail = f"the request line and headers did not arrive within {self.read_timeout_s:g} s (--read-timeout-s)"
        self._refuse(408, "Request Timeout", "request_timeout", detail)

    def _refuse(self, status: int, reason: str, code: str, detail: str) -> None:
        self._stop_head_clock()
        if not self.transport.is_closing():
            self.transport.write(raw_error(status, reason, code, detail))
            self.transport.close()


def limited_protocol(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for these settings' read timeout and connection limit."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"read_timeout_s": settings.read_timeout_s, "max_connections": settings.connection_limit})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options from the server's own limits (both the single process and each HTTP worker use them)."""
    return {"http": limited_protocol(settings), "log_config": None, "access_log": False,
            # a backstop behind the protocol's own JSON refusal, which comes first
            "limit_concurrency": settings.connection_limit + 1,
            "timeout_graceful_shutdown": settings.shutdown_grace_seconds}
