"""Prometheus metrics, in a registry owned by one app (two apps in one process never share counters).

Behind the multi-process front end (``--http-workers``) every process writes its metrics to the folder named by
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode), and a scrape of any HTTP worker renders the
sum over all of them: requests of every worker, batches of the inference process. Gauges are summed over the live
processes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
if TYPE_CHECKING:
    from server.admission import InflightBudget

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


class ServerMetrics:
    """Request counts and latency per route; per model: queue depth, running batches, batch sizes, inference time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("requests", "HTTP requests by route template and status code",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("request_latency_seconds", "Time from request start to response end",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.queue_depth = Gauge("queue_depth", "Requests waiting in a model's batching queue",
                                 ["model"], registry=self.registry, multiprocess_mode="livesum")
        self.running = Gauge("batches_running", "Batches a model is running right now",
                             ["model"], registry=self.registry, multiprocess_mode="livesum")
        self.batch_size = Histogram("batch_size", "Images per inference batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = Histogram("inference_seconds", "Wall time of one batch inference", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejected = Counter("rejected_requests", "Requests refused by a model (queue_full, deadline, and "
                                "inflight_bytes or inflight_pixels for the server-wide memory limits)",
                                ["model", "reason"], registry=self.registry)
        self.inflight_bytes = Gauge("inflight_bytes", "Upload bytes held by requests in flight (all models)",
                                    registry=self.registry, multiprocess_mode="livesum")
        self.inflight_pixels = Gauge("inflight_pixels", "Decoded image pixels held by requests in flight "
                                     "(all models)", registry=self.registry, multiprocess_mode="livesum")
        self.budget: InflightBudget | None = None

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one finished HTTP request."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if self.multiprocess and self.budget is not None:  # other processes read the last value written
            self.inflight_bytes.set(self.budget.bytes)
            self.inflight_pixels.set(self.budget.pixels)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        """Record one batch run by a model."""
        self.batch_size.labels(model=model).observe(size)
        self.inference.labels(model=model).observe(seconds)

    def set_queue_depth(self, model: str, depth: int) -> None:
        """Current number of requests waiting for a model."""
        self.queue_depth.labels(model=model).set(depth)

    def set_running(self, model: str, running: int) -> None:
        """Current number of batches a model is running."""
        self.running.labels(model=model).set(running)

    def count_rejection(self, model: str, reason: str) -> None:
        """A request refused by a model's queue or by the in-flight limits."""
        self.rejected.labels(model=model, reason=reason).inc()

    def watch_inflight(self, budget: InflightBudget) -> None:
        """Report the budget's in-flight bytes and pixels: read at each scrape, or, across processes, written as
        each request ends."""
        self.budget = budget
        if not self.multiprocess:
            self.inflight_bytes.set_function(lambda: budget.bytes)
            self.inflight_pixels.set_function(lambda: budget.pixels)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every process of the front end)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return generate_latest(combined)
