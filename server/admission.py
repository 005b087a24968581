"""Server-wide admission by memory: upload bytes and image working memory in flight, reserved before they are held.

The queue bound counts requests; this counts what they weigh. One ``InflightBudget`` per app is shared by
every model's pipeline. A request takes a ``Ticket``: it reserves its body's bytes chunk by chunk as they arrive
(a Content-Length that would not fit is refused before anything is read) and the working memory of its image
steps, counted in pixels of 4 bytes (``server.costs``: each step's measured bytes per pixel, reserved before it
runs, from the header before a decode), gives
back each part as soon as it drops it, and gives back the rest when the request ends, whatever the outcome.
Thread-safe: pixels are reserved from decode-pool threads.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any

TICKET_KEY = "server.admission_ticket"  # where a request's ticket lives in its ASGI scope
FLAGS = {"bytes": "--max-inflight-bytes", "pixels": "--max-inflight-pixels"}
WORDING = {"bytes": "upload bytes", "pixels": "pixels (4 B each) of image working memory"}


class OverloadedError(Exception):
    """A reservation that would take the server past one of its in-flight limits."""

    def __init__(self, resource: str, asked: int, in_use: int, limit: int) -> None:
        self.resource, self.asked, self.in_use, self.limit = resource, asked, in_use, limit
        super().__init__(f"the server holds {in_use:,} {WORDING[resource]} in flight; this request's {asked:,} "
                         f"would pass the limit of {limit:,} ({FLAGS[resource]})")


class OverBudgetError(OverloadedError):
    """A reservation larger than the whole limit: it would never be admitted, however long the client waits."""

    def __init__(self, resource: str, asked: int, limit: int) -> None:
        self.resource, self.asked, self.in_use, self.limit = resource, asked, 0, limit
        Exception.__init__(self, f"this request needs {asked:,} {WORDING[resource]}, more than the limit of "
                                 f"{limit:,} ({FLAGS[resource]}) for all requests in flight together")


class TicketClosedError(RuntimeError):
    """A reservation for a request that has already ended (its decode is abandoned)."""


class InflightBudget:
    """Bytes and pixels held by requests in flight, each under its limit; ``reserve`` all or nothing."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        if max_bytes < 1 or max_pixels < 1:
            raise ValueError(f"in-flight limits must be >= 1 (got {max_bytes} bytes, {max_pixels} pixels)")
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._lock = threading.Lock()
        self._bytes = 0
        self._pixels = 0

    @property
    def bytes(self) -> int:
        """Upload bytes reserved right now."""
        return self._bytes

    @property
    def pixels(self) -> int:
        """Decoded pixels reserved right now."""
        return self._pixels

    def reserve(self, nbytes: int = 0, pixels: int = 0) -> None:
        """Take ``nbytes`` and ``pixels``, or neither: OverloadedError when either would pass its limit."""
        if nbytes < 0 or pixels < 0:
            raise ValueError("reservations are >= 0")
        with self._lock:
            self._reserve_locked(nbytes, pixels)

    def _reserve_locked(self, nbytes: int, pixels: int) -> None:
        self._check_locked(nbytes, pixels)
        self._bytes += nbytes
        self._pixels += pixels

    def check(self, nbytes: int = 0, pixels: int = 0) -> None:
        """OverloadedError if ``nbytes`` and ``pixels`` would not fit now; reserves nothing."""
        with self._lock:
            self._check_locked(nbytes, pixels)

    def _check_locked(self, nbytes: int, pixels: int) -> None:
        if nbytes and self._bytes + nbytes > self.max_bytes:
            raise OverloadedError("bytes", nbytes, self._bytes, self.max_bytes)
        if pixels > self.max_pixels:
            raise OverBudgetError("pixels", pixels, self.max_pixels)
        if pixels and self._pixels + pixels > self.max_pixels:
            raise OverloadedError("pixels", pixels, self._pixels, self.max_pixels)

    def release(self, nbytes: int = 0, pixels: int = 0) -> None:
        """Give back what ``reserve`` took (never below zero)."""
        with self._lock:
            self._release_locked(nbytes, pixels)

    def _release_locked(self, nbytes: int, pixels: int) -> None:
        self._bytes = max(0, self._bytes - nbytes)
        self._pixels = max(0, self._pixels - pixels)

    def ticket(self) -> Ticket:
        """A new request's share of this budget (empty until it reserves)."""
        return Ticket(self)


class Ticket:
    """One request's reservations: taken piece by piece, given back in parts or all at once (idempotent).

    After ``close`` nothing more can be reserved (TicketClosedError), so a decode still running in a pool thread
    for a request that has already ended cannot leave pixels behind.
    """

    def __init__(self, budget: InflightBudget) -> None:
        self.budget = budget
        self.bytes = 0
        self.pixels = 0
        self.closed = False

    def reserve_bytes(self, nbytes: int) -> None:
        """Reserve ``nbytes`` more upload bytes for this request."""
        self._reserve(nbytes, 0)

    def reserve_pixels(self, pixels: int) -> None:
        """Reserve ``pixels`` more pixels (4 B each) of image working memory for this request."""
        self._reserve(0, pixels)

    def _reserve(self, nbytes: int, pixels: int) -> None:
        budget = self.budget
        with budget._lock:
            if self.closed:
                raise TicketClosedError("the request has ended; nothing more can be reserved for it")
            budget._reserve_locked(nbytes, pixels)
            self.bytes += nbytes
            self.pixels += pixels

    def release_bytes(self, keep: int = 0) -> None:
        """Give back this request's bytes down to ``keep`` (what it still holds, e.g. extra files)."""
        with self.budget._lock:
            freed = max(0, self.bytes - max(0, keep))
            self.budget._release_locked(freed, 0)
            self.bytes -= freed

    def release_pixels(self, keep: int = 0) -> None:
        """Give back this request's pixels down to ``keep`` (what its later steps still need)."""
        with self.budget._lock:
            freed = max(0, self.pixels - max(0, keep))
            self.budget._release_locked(0, freed)
            self.pixels -= freed

    def close(self) -> None:
        """Give back everything this request holds; later reservations fail."""
        with self.budget._lock:
            self.budget._release_locked(self.bytes, self.pixels)
            self.bytes = self.pixels = 0
            self.closed = True

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request_ticket(scope: MutableMapping[str, Any], budget: InflightBudget) -> Ticket:
    """The ticket of the request with this ASGI scope (created on first use)."""
    ticket = scope.get(TICKET_KEY)
    if ticket is None:
        ticket = scope[TICKET_KEY] = budget.ticket()
    return ticket


def close_request_ticket(scope: MutableMapping[str, Any]) -> None:
    """Give back whatever the request with this scope still holds (nothing if it never reserved)."""
    ticket = scope.pop(TICKET_KEY, None)
    if ticket is not None:
        ticket.close()
