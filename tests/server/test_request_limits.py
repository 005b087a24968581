"""RequestLimitsMiddleware: a bound on requests in flight, with the probes exempt."""

from __future__ import annotations

import asyncio
import json

from server.middleware import RequestLimitsMiddleware


def scope(path: str) -> dict:
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": []}


def test_requests_past_the_limit_get_a_json_503_and_probes_still_answer():
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(app, path: str) -> tuple[int, bytes, dict]:
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope(path), receive, send)
        headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), headers

    async def main():
        app = RequestLimitsMiddleware(slow_app, max_bytes=1000, max_concurrent=2)
        held = [asyncio.ensure_future(call(app, "/slow")) for _ in range(2)]
        await asyncio.sleep(0.01)
        refused = await call(app, "/predict")
        health = await call(app, "/health")
        release.set()
        done = await asyncio.gather(*held)
        after = await call(app, "/predict")
        return refused, health, done, after, app.in_flight

    refused, health, done, after, in_flight = asyncio.run(main())
    status, body, headers = refused
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body) == {"error": "too_many_requests",
                                "detail": "2 requests are in flight; the limit is 2 (--max-concurrent)"}
    assert health[0] == 200 and [d[0] for d in done] == [200, 200] and after[0] == 200 and in_flight == 0
