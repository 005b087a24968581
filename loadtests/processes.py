"""Start and stop the servers under test on 127.0.0.1 (this server, TorchServe), by process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from common.compute import available_cores


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """SIGTERM the process group, wait until every member is gone (reaping the leader), SIGKILL what lingers."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # children (TorchServe's Java frontend, its workers) outlive the leader
        process.poll()  # reap the leader, or its zombie keeps the group alive
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
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

    def command(self) -> list[str]:
        """The command line this process runs."""
        return [sys.executable, "-m", "server", "--store", str(self.store), "--host", "127.0.0.1",
                "--port", str(self.port), *self.extra_args]

    def launch(self) -> ServerProcess:
        """Start the server process without waiting for it (several can then warm up at once)."""
        cmd = self.command()
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


def session_cpu(sid: int) -> dict[int, float]:
    """pid -> user + system CPU seconds of every live process in session ``sid`` (Linux /proc)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def kill_session(sid: int, timeout: float = 10) -> None:
    """SIGTERM every process left in session ``sid``, SIGKILL whatever outlives ``timeout``."""
    for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        for pid in session_cpu(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + wait
        while session_cpu(sid) and time.monotonic() < deadline:
            time.sleep(0.1)


RAY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "ray" / "serve.yaml"


class RayServeProcess(ServerProcess):
    """``python -m server.ray`` (a local Ray, no dashboard) on a free 127.0.0.1 port, logs to a file.

    Stopped by SIGTERM, which shuts Serve and the local Ray down; whatever is left of its session (Ray's workers
    have process groups of their own) is killed.
    """

    def __init__(self, store: str | Path, replicas: int, cpus_per_replica: float, args: Sequence[str] = (),
                 log_path: str | Path | None = None, cpus: int | None = None, config: Path = RAY_CONFIG) -> None:
        super().__init__(store, log_path=log_path, env={"RAY_USAGE_STATS_ENABLED": "0"}, inherit_server_env=False)
        self.replicas, self.cpus_per_replica, self.args, self.config = replicas, cpus_per_replica, list(args), config
        self.cpus = cpus or available_cores()

    def command(self) -> list[str]:
        """``python -m server.ray`` with this many replicas, CPUs and no GPU."""
        return [sys.executable, "-m", "server.ray", "--config", str(self.config), "--store", str(self.store),
                "--replicas", str(self.replicas), "--num-cpus", str(self.cpus_per_replica), "--num-gpus", "0",
                "--cpus", str(self.cpus), "--port", str(self.port), *(f"--arg={a}" for a in self.args)]

    def stop(self, grace: float = 60) -> None:
        """SIGTERM (Serve and Ray shut down in order), then kill what is left of the session."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        stop_group(self.process)
        kill_session(self.process.pid)
        self.process = None


TORCHSERVE_PID_FILE = Path(tempfile.gettempdir()) / ".model_server.pid"


def _clear_stale_pid_file() -> None:
    """TorchServe refuses to start while its pid file names a process, even a dead one."""
    try:
        pid = int(TORCHSERVE_PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        TORCHSERVE_PID_FILE.unlink(missing_ok=True)
        return
    raise RuntimeError(f"another TorchServe (pid {pid}) is running; TorchServe allows one per machine")


class TorchServeProcess:
    """Run TorchServe 0.12 on 127.0.0.1 for one .mar, in the foreground of a child process group.

    Used by tests and by the head-to-head benchmark; ``batch_size``/``max_batch_delay_ms`` configure
    TorchServe's own batching, and token auth is disabled because it only listens on loopback.
    """

    def __init__(self, store: str | Path, name: str, workers: int = 1, batch_size: int = 1,
                 max_batch_delay_ms: int = 5, workdir: str | Path | None = None) -> None:
        self.store, self.name = Path(store).resolve(), name
        self.workers, self.batch_size, self.max_batch_delay_ms = workers, batch_size, max_batch_delay_ms
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="torchserve-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Inference API base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> TorchServeProcess:
        """Start TorchServe, register the model with its batching settings, wait until it answers."""
        import urllib.request

        config = self.workdir / "config.properties"
        config.write_text("\n".join([
            f"inference_address=http://127.0.0.1:{self.port}",
            f"management_address=http://127.0.0.1:{self.management_port}",
            f"metrics_address=http://127.0.0.1:{self.metrics_port}",
            "disable_token_authorization=true",
            "install_py_dep_per_model=false",
            f"model_store={self.store}",
            f"load_models={self.name}.mar",
            "models=" + json.dumps({self.name: {"1": {
                "marName": f"{self.name}.mar", "minWorkers": self.workers, "maxWorkers": self.workers,
                "batchSize": self.batch_size, "maxBatchDelay": self.max_batch_delay_ms, "responseTimeout": 120}}}),
            "",
        ]))
        _clear_stale_pid_file()
        binary = Path(sys.executable).with_name("torchserve")
        cmd = [str(binary if binary.exists() else "torchserve"), "--start", "--foreground", "--ncs",
               "--model-store", str(self.store), "--ts-config", str(config), "--disable-token-auth"]
        log = open(self.workdir / "torchserve.out", "wb")  # noqa: SIM115 - closed with the process
        threads = str(max(1, (os.cpu_count() or 1) // self.workers))  # the workers share the cores
        env = {**os.environ, "OCCLUSION_SERVE_THREADS": os.environ.get("OCCLUSION_SERVE_THREADS", threads)}
        self.process = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited early; see {self.workdir / 'torchserve.out'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.management_port}/models/{self.name}",
                                            timeout=2) as resp:
                    if '"status": "READY"' in resp.read().decode():
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"TorchServe did not become ready in {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the whole process group (the Java frontend and its Python workers)."""
        if self.process is None:
            return
        stop_group(self.process, timeout=20)
        TORCHSERVE_PID_FILE.unlink(missing_ok=True)
        self.process = None

    def __enter__(self) -> TorchServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
