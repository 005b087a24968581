"""/health probed from a thread while an attack runs: every latency and how many probes failed."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np


class HealthProbe:
    """GET /health in a loop on its own thread, from ``start`` to ``stop``, ``pause`` seconds apart."""

    def __init__(self, url: str, pause: float = 0.01) -> None:
        self.url, self.pause = url, pause
        self.health: list[float] = []
        self.failures = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stopping.is_set():
                start = time.perf_counter()
                try:
                    ok = client.get("/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health.append(time.perf_counter() - start)
                self.failures += not ok
                time.sleep(self.pause)

    def start(self) -> None:
        """Begin probing."""
        self.thread.start()

    def stop(self) -> None:
        """Stop probing and wait for the thread."""
        self.stopping.set()
        self.thread.join()

    def p99_ms(self) -> float:
        """The 99th percentile latency of the probes, in milliseconds."""
        return float(np.percentile(self.health, 99) * 1000)
