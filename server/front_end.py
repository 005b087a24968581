"""``python -m server --http-workers N``: N HTTP worker processes in front of one inference process.

One Python process parses HTTP, decodes uploads and writes JSON for about 5 ms of CPU per request, which caps a
server at about 200 requests/s however fast the GPU is (issue 21). Here:

- the **inference process** owns the models: the registry, the sessions, the batchers, the GPU memory and the
  warm-up of every bucket. It listens on a Unix socket (``server.ipc``) and batches what every worker sends it;
- each **HTTP worker** runs the whole FastAPI app on its own socket bound with SO_REUSEPORT (the kernel spreads
  connections over them): admission, upload limits, decoding on its own cores, its own queue and deadlines. Its
  models are ``ModelRunner`` s whose backend sends each batch to the inference process through shared memory;
  when the inference process decodes on its GPU, JPEG uploads travel as their bytes and are decoded there;
- the **supervisor** (this process) starts them, passes SIGTERM on (workers drain first, then the inference
  process stops), and exits non-zero when any of them dies, so that an orchestrator restarts the whole.

Every process writes Prometheus metrics to one folder; a scrape of any worker sums them. ``POST /evaluations``
runs jobs inside one process and is refused (409) behind more than one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.manifest import Manifest, Precision
from server.batching import DeadlineExceededError, QueueFullError
from server.domain_errors import InvalidInput, ServingError
from server.ipc import (
    InferenceClient,
    ThreadClients,
    attach,
    pack,
    read_message,
    remove_segments,
)
from server.precision import Selection
from server.registry import FAILED, LOADING, READY, ModelRegistry, read_store
from server.runner import ModelRunner, select_artifact
from server.settings import Settings

log = logging.getLogger("server.front_end")
ADDRESS_ENV, OWNER_ENV = "OCCLUSION_SERVE_INFERENCE_SOCKET", "OCCLUSION_SERVE_FRONT_END"
STATUS_POLL_SECONDS = 0.2
REMOTE_FACTS = ("backend", "provider", "providers", "batching", "device_prepare", "served", "precision")
PR_SET_PDEATHSIG = 1  # prctl(2)
START_SECONDS = 600.0  # the inference process must listen within this (it loads models after it listens)


# ---- the inference process -------------------------------------------------------------------------------------

class InferenceService:
    """Answers the HTTP workers' ``status`` and ``infer`` messages from the real model registry."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def status(self) -> dict[str, Any]:
        """Each model's state, error and runtime description."""
        registry = self.registry
        return {"states": dict(registry.states), "errors": dict(registry.errors),
                "models": {name: registry.describe(name) for name in registry.names}}

    async def _runner(self, message: dict[str, Any]) -> ModelRunner:
        runner = self.registry.runner(message["model"])
        if message["precision"] != runner.precision:  # the worker's word, read here once
            runner = await self.registry.runner_at(message["model"], Precision(message["precision"]))
        return runner

    async def infer(self, message: dict[str, Any], maps: dict) -> tuple[dict[str, Any], np.ndarray | None]:
        """Run one worker batch (a float32 stack, or JPEG uploads to decode here with ``infer_encoded``) through the
        model's batcher; the answer's header and outputs."""
        try:
            runner = await self._runner(message)
            buffer = attach(message["shm"], maps)
            deadline = time.monotonic() + float(message["deadline_in"])
            rejected: dict[str, str] = {}
            if message["op"] == "infer_encoded":
                images, rejected = await self._decode(runner, message, buffer, deadline)
                if images is None:
                    return {"nbytes": 0, "shape": [0], "dtype": "float32", "rejected": rejected}, None
            else:
                shape = tuple(int(v) for v in message["shape"])
                if int(np.prod(shape)) * 4 > len(buffer):
                    return {"error": "bad_request", "detail": f"shape {shape} does not fit the shared segment"}, None
                images = np.ndarray(shape, np.float32, buffer=buffer)
            result = await runner(images, deadline, bool(message.get("exclusive", False)))
        except ServingError as exc:
            return {"error": exc.code, "detail": exc.detail}, None
        except QueueFullError as exc:
            return {"error": "queue_full", "detail": str(exc)}, None
        except DeadlineExceededError as exc:
            return {"error": "deadline", "detail": str(exc)}, None
        except Exception as exc:  # the runtime failed: the worker's runner counts it toward unhealthy
            log.error("model %s failed on a batch from an HTTP worker", message["model"], exc_info=exc)
            return {"error": "failed", "detail": f"{type(exc).__name__}: {exc}"}, None
        outputs = np.ascontiguousarray(result.outputs)
        return {"nbytes": outputs.nbytes, "shape": list(outputs.shape), "dtype": str(outputs.dtype),
                "batch_size": result.batch_size, "queue_s": result.queue_seconds,
                "inference_s": result.inference_seconds, "rejected": rejected}, outputs

    @staticmethod
    async def _decode(runner: ModelRunner, message: dict[str, Any], buffer: Any,
                      deadline: float) -> tuple[Any, dict[str, str]]:
        """The uploads decoded together on the model's device: the stack of those it took (None if none) and why
        it refused the others, by index."""
        if runner.decoder is None:
            raise InvalidInput("bad_request", f"model {runner.name!r} decodes no uploads on a device")
        encoded = np.empty(len(message["sizes"]), dtype=object)
        offset = 0
        for index, size in enumerate(message["sizes"]):
            encoded[index] = bytes(buffer[offset:offset + size])
            offset += size
        rows = (await runner.decoder.submit(encoded, deadline)).outputs
        rejected = {str(i): str(row) for i, row in enumerate(rows) if isinstance(row, Exception)}
        kept = [row for row in rows if not isinstance(row, Exception)]
        if not kept:
            return None, rejected
        import torch  # only a device-decoding inference process gets here

        return torch.stack(kept), rejected

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One worker connection: messages in order until it closes."""
        maps: dict = {}
        try:
            while True:
                try:
                    message = await read_message(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                outputs = None
                if message.get("op") == "status":
                    answer = self.status()
                elif message.get("op") in ("infer", "infer_encoded"):
                    answer, outputs = await self.infer(message, maps)
                else:
                    answer = {"error": "bad_request", "detail": f"unknown op {message.get('op')!r}"}
                writer.write(pack(answer))
                if outputs is not None:
                    writer.write(outputs.data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
            for mapping in maps.values():
                with contextlib.suppress(BufferError):
                    mapping.close()


async def serve_inference(settings: Settings, address: str) -> None:
    """Load the models and answer the workers until SIGTERM or SIGINT."""
    from server.banner import banner
    from server.prometheus import ServerMetrics

    manifests, failures = read_store(settings)
    registry = ModelRegistry(manifests, settings, ServerMetrics(), failures)
    service = InferenceService(registry)
    server = await asyncio.start_unix_server(service.handle, path=address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def load() -> None:
        await registry.load()
        providers = {name: runner.backend.provider for name, runner in registry.runners.items()}
        print(banner(settings, registry.manifests, providers), flush=True)

    loading = asyncio.create_task(load(), name="load-models")
    await stop.wait()
    server.close()
    loading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loading
    await registry.close()


# ---- the HTTP workers ------------------------------------------------------------------------------------------

class RemoteBackend:
    """A backend whose batches run on the inference process (called from the worker's inference threads)."""

    def __init__(self, clients: ThreadClients, model: str, precision: Precision, description: dict[str, Any],
                 timeout_s: float) -> None:
        self.clients, self.model, self.precision, self.timeout_s = clients, model, precision, timeout_s
        self.kind = description.get("backend", "onnx")
        self.provider = description.get("provider") or "remote"
        self.providers = list(description.get("providers") or [self.provider])
        self.takes_encoded = description.get("device_prepare") is not None  # it decodes JPEGs on its device

    def run(self, images: np.ndarray) -> np.ndarray:
        """One batch on the inference process (a float32 stack, or JPEG uploads as an object array: then one row or
        refusal per upload); a broken connection is reopened at the next batch."""
        client = self.clients.get()
        try:
            if images.dtype == object:
                return client.infer_encoded(self.model, self.precision, list(images), self.timeout_s)
            return client.infer(self.model, self.precision, images, self.timeout_s)
        except (ConnectionError, OSError):
            self.clients.drop()
            raise


def worker_settings(settings: Settings) -> Settings:
    """A worker's own batching: no padding and no device work (the inference process does both), no injected
    faults or latency (they belong to the model), and two batches in flight so the inference process always has
    the next one."""
    return dataclasses.replace(settings, batch_buckets="off", device_prepare="off", extra_latency_ms=0.0, fault="",
                               workers=max(2, settings.workers))


class RemoteRegistry(ModelRegistry):
    """The worker's registry: the inference process's states and runtime, with runners that call it."""

    reloadable = False  # the inference process owns the models

    def __init__(self, manifests: dict[str, Manifest], settings: Settings, clients: ThreadClients, address: str,
                 failures: dict[str, str] | None = None) -> None:
        super().__init__(manifests, worker_settings(settings), None, failures)
        self.clients, self.address, self.http_workers = clients, address, settings.http_workers
        self.remote: dict[str, dict[str, Any]] = {}

    def _status(self) -> dict[str, Any]:
        client = InferenceClient(self.address, 0)
        try:
            return client.call({"op": "status"})
        finally:
            client.close()

    def _remote_runner(self, name: str, selection: Selection | None = None) -> ModelRunner:
        manifest, description = self.manifests[name], self.remote.get(name, {})
        # the served precision is the inference process's choice (it may have re-checked a variant there)
        if selection is None:
            served = Precision(description.get("precision") or Precision.FP32)  # the inference process's word
            selection = select_artifact(manifest, self.settings, served)
        backend = RemoteBackend(self.clients, name, selection.precision, description,
                                self.settings.timeout_ms / 1000.0)
        runner = ModelRunner(manifest, self.settings, None, on_health=self._health, selection=selection,
                             backend=backend)
        runner.warm = True  # the inference process warmed the model
        return runner

    async def load(self) -> None:
        """Wait until the inference process has loaded every model, then mirror each one's state."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                status = await loop.run_in_executor(None, self._status)
            except OSError:  # not listening yet
                await asyncio.sleep(STATUS_POLL_SECONDS)
                continue
            if all(status["states"].get(name) != LOADING for name in self.manifests):
                break
            await asyncio.sleep(STATUS_POLL_SECONDS)
        self.remote = status["models"]
        for name in self.manifests:
            if status["states"].get(name) != READY:
                self.states[name] = FAILED
                self.errors[name] = status["errors"].get(name, "the inference process could not load it")
                continue
            runner = self._remote_runner(name)
            runner.start()
            self.runners[name] = runner
            self.states[name] = READY

    def _build_alternate(self, manifest: Manifest, selection: Selection) -> ModelRunner:
        return self._remote_runner(manifest.name, selection)

    async def close(self) -> None:
        """Stop the runners and close the connections to the inference process."""
        await super().close()
        self.clients.close()

    def describe(self, name: str) -> dict[str, Any]:
        """The model as the inference process runs it, and which worker answered."""
        out = super().describe(name)
        remote = self.remote.get(name, {})
        out.update({key: remote[key] for key in REMOTE_FACTS if key in remote})
        out["front_end"] = {"http_workers": self.http_workers, "worker_pid": os.getpid()}
        return out


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, so that every worker binds the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_http(settings: Settings, address: str, owner: int) -> None:
    """One HTTP worker: the app, with a remote registry, on its own SO_REUSEPORT socket, until SIGTERM."""
    import uvicorn

    from server.connections import uvicorn_options
    from server.main import create_app

    manifests, failures = read_store(settings)
    registry = RemoteRegistry(manifests, settings, ThreadClients(address, owner), address, failures)
    app = create_app(worker_settings(settings), manifests, registry=registry)
    config = uvicorn.Config(app, **uvicorn_options(settings))
    uvicorn.Server(config).run(sockets=[listening_socket(settings.host, settings.port)])


# ---- the supervisor --------------------------------------------------------------------------------------------

def _child(role: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
    """A child in a session of its own: a terminal's Ctrl-C or a signal to the supervisor's group reaches only the
    supervisor, which stops the children in order (workers drain before the inference process goes)."""
    return subprocess.Popen([sys.executable, "-m", "server.front_end", role, *argv], env=env, start_new_session=True)


def die_with_parent() -> None:
    """Have the kernel send SIGTERM to this process when its parent (the supervisor) dies, even by SIGKILL."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _stop(children: list[subprocess.Popen], grace: float) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Start the inference process and the workers; stop them in order on SIGTERM/SIGINT; non-zero if one died."""
    from prometheus_client import multiprocess

    folder = Path(tempfile.mkdtemp(prefix="occlusion-serve-"))
    address = str(folder / "inference.sock")
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    owner = os.getpid()
    env = {**os.environ, ADDRESS_ENV: address, OWNER_ENV: str(owner), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    inference = _child("inference", argv, env)
    workers: list[subprocess.Popen] = []
    failed = None
    try:
        started = time.monotonic()
        while not Path(address).exists() and not stopping:
            if inference.poll() is not None:
                failed = f"the inference process exited with {inference.returncode} before it listened"
                break
            if time.monotonic() - started > START_SECONDS:
                failed = f"the inference process did not listen within {START_SECONDS:g} s"
                break
            time.sleep(0.05)
        if failed is None and not stopping:
            workers = [_child("http", argv, env) for _ in range(settings.http_workers)]
        while failed is None and not stopping:
            for child in (inference, *workers):
                if child.poll() is not None:
                    role = "the inference process" if child is inference else f"HTTP worker {child.pid}"
                    failed = f"{role} exited with {child.returncode}"
            time.sleep(0.1)
    finally:
        _stop(workers, settings.shutdown_grace_seconds + 5)  # they drain their requests on the inference process
        _stop([inference], 30)
        for child in (inference, *workers):
            multiprocess.mark_process_dead(child.pid, str(metrics_dir))
        remove_segments(owner)
        shutil.rmtree(folder, ignore_errors=True)
    if failed:
        print(f"error: {failed}; the front end stopped", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server.front_end inference|http FLAGS``: one child of the supervisor."""
    from server.allocator import configure_malloc
    from server.logs import configure_logging
    from server.settings import parse_settings

    configure_malloc()  # before any thread starts
    die_with_parent()
    argv = list(sys.argv[1:] if argv is None else argv)
    role, flags = argv[0], argv[1:]
    settings = parse_settings(flags)
    configure_logging(settings.log_level)
    address, owner = os.environ[ADDRESS_ENV], int(os.environ[OWNER_ENV])
    if role == "inference":
        asyncio.run(serve_inference(settings, address))
    else:
        serve_http(settings, address, owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
