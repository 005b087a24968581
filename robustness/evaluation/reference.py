"""The evaluation as it ran before it was made faster: for benchmarks and for tests that compare the two.

Inside ``with reference_path():`` an evaluation started in this thread (or context) runs every corruption with
imagecorruptions' own code, perturbs and runs the model in turn in one thread, and computes bootstrap figures
one resample at a time. Its report holds the same figures as the faster path's for the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_REFERENCE = ContextVar("robustness_reference_path", default=False)


@contextmanager
def reference_path() -> Iterator[None]:
    """Evaluations started inside the block take the reference (pre-speed-up) path."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def on_reference_path() -> bool:
    """Whether the current context asked for the reference path."""
    return _REFERENCE.get()
