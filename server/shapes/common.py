"""Pieces shared by several answers: the error body, a scored label and the timing block."""

from __future__ import annotations

from typing_extensions import TypedDict

from server.shapes.schema import closed


@closed
class ErrorBody(TypedDict):
    """Every error: a short machine code and a human explanation."""

    error: str
    detail: str


@closed
class ScoredLabel(TypedDict):
    """A class and its score (sigmoid or softmax probability), rounded to 6 digits."""

    name: str
    score: float


@closed
class Timing(TypedDict):
    """Where the request's time went, in milliseconds, and the size of the batch it ran in."""

    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float
    batch_size: int
