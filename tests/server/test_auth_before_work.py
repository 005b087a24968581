"""With --api-key, a request without the key is refused before its body is read (a real server, raw sockets)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.server.conftest import API_KEY, LiveServer


def head_only(server: LiveServer, path: str, declared: int, authorization: str | None = None) -> bytes:
    """Send a request line and headers declaring ``declared`` body bytes, then only 10 of them; the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
                     f"Content-Length: {declared}\r\n\r\n".encode() + b"{" * 10)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # times out (socket.timeout) if the server waits for the rest of the body
            if not chunk:
                break
            answer += chunk
    return answer


@pytest.mark.parametrize("path", ["/evaluations", "/predict", "/robustness?n=4", "/v2/models/r18/infer"])
def test_a_request_without_the_key_is_refused_before_its_body_arrives(strict_server: LiveServer, path: str) -> None:
    for authorization in (None, "Bearer wrong-key"):
        answer = head_only(strict_server, path, 20 * 1024 * 1024, authorization)
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 401"), answer[:300]
        assert json.loads(body)["error"] == ("missing_api_key" if authorization is None else "invalid_api_key")
        assert b"www-authenticate: bearer" in status.lower()


def test_evaluation_bodies_are_capped_at_a_few_kib(strict_server: LiveServer) -> None:
    answer = head_only(strict_server, "/evaluations", 100_000, f"Bearer {API_KEY}")
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(body) == {"error": "payload_too_large", "detail": "the request body is 100,000 bytes "
                                "(Content-Length); the limit is 16,384 bytes (JSON bodies of this route)"}


def test_open_routes_stay_open_and_keyed_routes_accept_the_key(strict_server: LiveServer) -> None:
    with strict_server.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/models").status_code == 401
        assert client.get("/models", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert httpx.get(f"{strict_server.url}/v2").status_code == 200
