"""Fixtures: a tiny model store (a classifier and a segmenter) and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from export.torchserve import free_port
from tests.conftest import CLASSIFIER, SEGMENTER, SEGMENTER_PRESET, SEGMENTER_SIZE  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parents[2]

API_KEY = "test-key-123"
STARTUP_SECONDS = 120


@dataclass
class LiveServer:
    """A `python -m server` subprocess and how to reach it."""

    process: subprocess.Popen
    url: str
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        """An httpx client for this server."""
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def logs(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.log.read_text()


def launch_server(store: Path, log: Path, *flags: str) -> LiveServer:
    """Start `python -m server` on a free port (without waiting for it)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVER_")}
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "server", "--store", str(store), "--port", str(port), *flags]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return LiveServer(process, f"http://127.0.0.1:{port}", log)


def wait_ready(server: LiveServer) -> LiveServer:
    """Wait until /ready answers 200; raise with the server's log if it exits or never gets there."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.logs()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/ready", timeout=1.0).status_code == 200:
                return server
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {STARTUP_SECONDS} s:\n{server.logs()}")


def stop_server(server: LiveServer) -> None:
    """Stop the subprocess by pid: SIGTERM, then SIGKILL if it lingers."""
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


# The main server: generous queue, a 50 ms batching window, small upload and pixel limits for the bad-input tests.
MAX_BODY_BYTES = 2_000_000  # room for a 128 px v2 JSON tensor (about 1 MB)
MAX_PIXELS = 4_000_000
MAIN_FLAGS = ("--max-batch", "8", "--max-delay-ms", "50", "--queue-size", "64", "--max-body-bytes", str(MAX_BODY_BYTES),
              "--max-pixels", str(MAX_PIXELS), "--default-model", CLASSIFIER, "--intra-op-threads", "1",
              "--decode-threads", "2")

# The strict server: TorchScript, an API key, one request in flight plus one queued, a 500 ms "model" and a
# 750 ms deadline: the running request answers, the queued one gets a 504 (it cannot finish before 2 x 500 ms)
# and the rest are shed with 503s. The deadline sits halfway, so 250 ms of scheduling jitter changes nothing.
EXTRA_LATENCY_MS = 500
TIMEOUT_MS = 750
STRICT_FLAGS = ("--models", CLASSIFIER, "--backend", "torchscript", "--api-key", API_KEY, "--max-batch", "1",
                "--max-delay-ms", "0", "--queue-size", "1", "--extra-latency-ms", str(EXTRA_LATENCY_MS),
                "--timeout-ms", str(TIMEOUT_MS), "--intra-op-threads", "1")


@pytest.fixture(scope="session")
def servers(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """Both servers, started together (their start-up overlaps) and stopped at the end of the session."""
    logs = tmp_path_factory.mktemp("server-logs")
    started = {"main": launch_server(store, logs / "main.log", *MAIN_FLAGS),
               "strict": launch_server(store, logs / "strict.log", *STRICT_FLAGS)}
    try:
        for live in started.values():
            wait_ready(live)
        yield started
    finally:
        for live in started.values():
            stop_server(live)


@pytest.fixture(scope="session")
def server(servers: dict[str, LiveServer]) -> LiveServer:
    """The main server."""
    return servers["main"]


@pytest.fixture(scope="session")
def strict_server(servers: dict[str, LiveServer]) -> LiveServer:
    """The strict server (TorchScript, API key, queue of one, slow model)."""
    return servers["strict"]


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client for the main server."""
    with server.client() as c:
        yield c
