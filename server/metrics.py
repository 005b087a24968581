"""Prometheus metrics, in a registry owned by one app (two apps in one process never share counters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.queue_depth = Gauge("queue_depth", "Requests waiting in a model's batching queue",
                                 ["model"], registry=self.registry)
        self.running = Gauge("batches_running", "Batches a model is running right now",
                             ["model"], registry=self.registry)
        self.batch_size = Histogram("batch_size", "Images per inference batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = Histogram("inference_seconds", "Wall time of one batch inference", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejected = Counter("rejected_requests", "Requests refused by a model (queue_full, deadline, and "
                                "inflight_bytes or inflight_pixels for the server-wide memory limits)",
                                ["model", "reason"], registry=self.registry)
        self.inflight_bytes = Gauge("inflight_bytes", "Upload bytes held by requests in flight (all models)",
                                    registry=self.registry)
        self.inflight_pixels = Gauge("inflight_pixels", "Decoded image pixels held by requests in flight "
                                     "(all models)", registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one finished HTTP request."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

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
        """Report the budget's in-flight bytes and pixels, read at each scrape."""
        self.inflight_bytes.set_function(lambda: budget.bytes)
        self.inflight_pixels.set_function(lambda: budget.pixels)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
