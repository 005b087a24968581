"""Start and stop the server under test on 127.0.0.1, by process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from export.torchserve import free_port


def wait_ready(url: str, process: subprocess.Popen | None, timeout: float, path: str = "/ready") -> None:
    """Poll ``url + path`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url}{path} was not ready after {timeout:.0f} s")


def stop_group(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class ServerProcess:
    """``python -m server`` on a free 127.0.0.1 port, logs to a file, stopped by process group."""

    def __init__(self, store: str | Path, extra_args: list[str] | None = None, log_path: str | Path | None = None,
                 env: dict[str, str] | None = None, inherit_server_env: bool = True) -> None:
        self.store, self.extra_args = Path(store), list(extra_args or [])
        self.port = free_port()
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.inherit_server_env = inherit_server_env
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> ServerProcess:
        """Start the server process without waiting for it (several can then warm up at once)."""
        cmd = [sys.executable, "-m", "server", "--store", str(self.store), "--host", "127.0.0.1",
               "--port", str(self.port), *self.extra_args]
        env = {k: v for k, v in os.environ.items() if self.inherit_server_env or not k.startswith("SERVER_")}
        env = {**env, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        return self

    def wait(self, timeout: float = 120) -> ServerProcess:
        """Wait for /ready; on failure stop the server and raise with the end of its log."""
        try:
            wait_ready(self.url, self.process, timeout)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.logs()[-4000:]}") from None
        return self

    def start(self, timeout: float = 120) -> ServerProcess:
        """Start the server and wait for /ready."""
        return self.launch().wait(timeout)

    def logs(self) -> str:
        """What the server wrote so far (empty without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the server's whole process group."""
        if self.process is not None:
            stop_group(self.process)
            self.process = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
