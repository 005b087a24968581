"""RequestPipeline: work off the event loop counts against the request's deadline."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from server.domain_errors import ServingError
from server.errors import http_status
from server.middleware import START_KEY
from server.pipeline import RequestPipeline
from server.prometheus import ServerMetrics
from server.settings import Settings


def pipeline(timeout_ms: float, pool: ThreadPoolExecutor) -> RequestPipeline:
    return RequestPipeline(SimpleNamespace(name="m"), Settings(timeout_ms=timeout_ms), ServerMetrics(), pool)


def arrived(seconds_ago: float) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [],
                    START_KEY: time.monotonic() - seconds_ago})


def test_slow_work_off_the_loop_is_a_504_at_the_deadline_not_after_it():
    with ThreadPoolExecutor(2) as pool:  # the abandoned sleep keeps its thread busy
        pipe = pipeline(500, pool)
        start = time.monotonic()
        with pytest.raises(ServingError) as info:
            asyncio.run(pipe.off_loop(arrived(0.0), time.sleep, 3.0))
        waited = time.monotonic() - start
        assert (http_status(info.value), info.value.code) == (504, "deadline_exceeded")
        assert 0.45 < waited < 2.0  # at the deadline, not when the 3 s of work ends
        assert asyncio.run(pipeline(5000, pool).off_loop(arrived(0.0), sum, [1, 2])) == 3  # quick work
        with pytest.raises(ServingError):  # nothing starts for a request already past its deadline
            asyncio.run(pipe.off_loop(arrived(1.0), sum, [1, 2]))
    text = pipe.metrics.render().decode()
    assert 'rejected_requests_total{model="m",reason="deadline"} 2.0' in text
