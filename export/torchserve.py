"""TorchServe archive: ``<store>/<name>.mar`` holding model.onnx, manifest.json and the project's handler."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model_store.manifest import MANIFEST, Manifest

HANDLER = Path(__file__).with_name("torchserve_handler.py")


def archiver_command() -> list[str]:
    """The torch-model-archiver executable beside this Python, or on PATH."""
    local = Path(sys.executable).with_name("torch-model-archiver")
    found = str(local) if local.exists() else shutil.which("torch-model-archiver")
    if not found:
        raise RuntimeError("torch-model-archiver not found; install the 'torchserve' extra")
    return [found]


def write_mar(manifest: Manifest, store: str | Path) -> Path:
    """Archive an entry's ONNX model with the handler; returns ``<store>/<name>.mar``."""
    store = Path(store)
    with tempfile.TemporaryDirectory() as tmp:
        # The archiver wants --handler FILE.py (not FILE.py:Class); the class is found by its base.
        handler = Path(tmp) / "handler.py"
        shutil.copyfile(HANDLER, handler)
        cmd = [
            *archiver_command(), "--model-name", manifest.name, "--version", manifest.version,
            "--serialized-file", str(manifest.artifact("model.onnx")),
            "--handler", str(handler), "--extra-files", str(manifest.path / MANIFEST),
            "--export-path", str(store), "--force",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return store / f"{manifest.name}.mar"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the Java frontend and workers outlive the launcher briefly
            self.process.poll()  # reap the launcher, or its zombie keeps the group alive
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self.process.wait()
        TORCHSERVE_PID_FILE.unlink(missing_ok=True)
        self.process = None

    def __enter__(self) -> TorchServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
