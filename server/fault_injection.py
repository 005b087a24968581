"""Testing only: a backend that slows down, fails or hangs each served batch (``--extra-latency-ms``, ``--fault``).

The runner serves through ``with_faults(backend, ...)``, which is the backend itself unless a fault is asked for;
its warm-up always runs the real backend, so a model with ``--fault raise`` loads and then fails every batch.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from server.runtimes import Backend
from server.settings import Settings


class FaultyBackend:
    """Runs the real backend after the configured delay, or raises, or waits until ``stopping`` is set."""

    def __init__(self, backend: Backend, settings: Settings, stopping: threading.Event) -> None:
        self.backend, self.stopping = backend, stopping
        self.delay_s, self.fault = settings.extra_latency_ms / 1000.0, settings.fault

    def run(self, images: np.ndarray) -> np.ndarray:
        """One batch, delayed, failed or hung as configured."""
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fault == "raise":
            raise RuntimeError("injected fault (--fault raise)")
        if self.fault == "hang":
            self.stopping.wait()  # until the runner stops
        return self.backend.run(images)


def with_faults(backend: Backend, settings: Settings, stopping: threading.Event) -> Backend | FaultyBackend:
    """What served batches run on: ``backend``, or a FaultyBackend around it when a fault is configured."""
    if settings.extra_latency_ms or settings.fault:
        return FaultyBackend(backend, settings, stopping)
    return backend
