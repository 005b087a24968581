"""Fixtures: a tiny model store (two classifiers and a segmenter) and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from export.pipeline import export_entry
from export.source import ExportSource
from loadtests.processes import ServerProcess, free_port
from models.factory import build_model
from models.presets import get_preset
from models.pretrained import load_pretrained, weights_path
from tests.conftest import CLASSIFIER, SEGMENTER, SEGMENTER_PRESET, SEGMENTER_SIZE  # noqa: F401  (re-exported)
from tests.server.oracle import metric

SOFTMAX_CLASSIFIER = "r18-softmax"  # the same architecture as CLASSIFIER, exported as a single-label model
SOFTMAX_PRESET = "resnet18-csra-128"
IMAGENET = "imagenet-mobilenetv2"  # the real ImageNet model, from the packaged pretrained weights


@pytest.fixture(scope="session")
def store(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared store's entries (linked, not copied) plus a random single-label (softmax) ResNet-18 CSRA.

    A folder of its own, so that the other suites that use the shared store do not see the extra model.
    """
    tmp = tmp_path_factory.mktemp("server-softmax-store")
    own = tmp / "model_store"
    own.mkdir()
    for entry in sorted(store.iterdir()):
        (own / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    preset = dataclasses.replace(get_preset(SOFTMAX_PRESET), activation="softmax")
    torch.manual_seed(1)
    model = build_model(preset).eval()
    checkpoint = tmp / f"{SOFTMAX_CLASSIFIER}.pth"
    torch.save(model.state_dict(), checkpoint)
    export_entry(ExportSource(model, preset, checkpoint, "preset"), SOFTMAX_CLASSIFIER, "1", own, formats=("onnx",),
                 progress=False)
    imagenet = build_model(get_preset(IMAGENET)).eval()
    load_pretrained(imagenet, imagenet.preset.pretrained)
    export_entry(ExportSource(imagenet, imagenet.preset, weights_path(imagenet.preset.pretrained), "preset"), IMAGENET,
                 "1", own, formats=("onnx",), progress=False)
    return own

API_KEY = "test-key-123"
STARTUP_SECONDS = 120


@dataclass
class LiveServer:
    """A `python -m server` subprocess (started by the load tests' ServerProcess) and how to reach it."""

    server: ServerProcess

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.server.url

    def client(self, **kwargs) -> httpx.Client:
        """An httpx client for this server."""
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def logs(self) -> str:
        """Everything the server wrote so far."""
        return self.server.logs()

    def metrics(self) -> str:
        """The server's /metrics page."""
        with self.client() as c:
            return c.get("/metrics").text

    def wait_for_gauge(self, family: str, value: float, model: str = CLASSIFIER, timeout: float = 10.0) -> None:
        """Poll a model's gauge on /metrics until it reads ``value``: tests sequence on the server's state, not
        on sleeps."""
        wait_until(lambda: metric(self.metrics(), family, model=model) == value, timeout, f"{family} to reach {value}")

    @property
    def grpc_target(self) -> str:
        """``127.0.0.1:PORT`` of its KServe v2 gRPC service (started with --grpc-port)."""
        args = self.server.extra_args
        return f"127.0.0.1:{args[args.index('--grpc-port') + 1]}"


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    stop = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < stop, f"timed out waiting for {what}"
        time.sleep(0.01)


def launch_server(store: Path, log: Path, *flags: str) -> LiveServer:
    """Start `python -m server` on a free port, without SERVER_* variables from the environment (no waiting)."""
    return LiveServer(ServerProcess(store, list(flags), log, inherit_server_env=False).launch())


# The main server: generous queue, a 50 ms batching window, small upload and pixel limits for the bad-input tests.
MAX_BODY_BYTES = 2_000_000  # room for a 128 px v2 JSON tensor (about 1 MB)
MAX_PIXELS = 4_000_000
MAIN_FLAGS = ("--max-batch", "8", "--max-delay-ms", "50", "--queue-size", "64", "--max-body-bytes", str(MAX_BODY_BYTES),
              "--max-pixels", str(MAX_PIXELS), "--default-model", CLASSIFIER, "--intra-op-threads", "1",
              "--decode-threads", "2")

# The strict server: TorchScript, an API key, one request in flight plus one queued, a 2 s "model" and a 3 s
# deadline: the running request answers, the queued one gets a 504 (it cannot finish before 2 x 2 s) and the rest
# are shed with 503s. The deadline sits halfway, so 1 s of scheduling delay on either side changes nothing: the
# running request's answer may come up to 1 s late, and the queued one may be sent up to 1 s after the running
# batch starts. The shed requests must arrive before the running batch ends (the queued request takes its place
# then, whatever its deadline), which gives them 2 s. A 1 s model with a 1.5 s deadline failed on a loaded 2-core
# machine: the running request answered at 1.3-1.8 s, once past its deadline.
EXTRA_LATENCY_MS = 2000
TIMEOUT_MS = 3000
STRICT_FLAGS = ("--models", CLASSIFIER, "--backend", "torchscript", "--api-key", API_KEY, "--max-batch", "1",
                "--max-delay-ms", "0", "--queue-size", "1", "--extra-latency-ms", str(EXTRA_LATENCY_MS),
                "--timeout-ms", str(TIMEOUT_MS), "--intra-op-threads", "1")


@contextlib.contextmanager
def running(started: dict[str, LiveServer]) -> Iterator[dict[str, LiveServer]]:
    """Wait until every launched server is ready (their start-ups overlap), and stop them all afterwards."""
    try:
        for live in started.values():
            live.server.wait(STARTUP_SECONDS)
        yield started
    finally:
        for live in started.values():
            live.server.stop()


@pytest.fixture(scope="session")
def servers(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """Both servers, started together (their start-up overlaps) and stopped at the end of the session."""
    logs = tmp_path_factory.mktemp("server-logs")
    no_data = ("--data-dir", str(tmp_path_factory.mktemp("no-datasets")))  # fuzzed /evaluations find nothing to run
    grpc = ("--grpc-port", str(free_port()))
    with running({"main": launch_server(store, logs / "main.log", *MAIN_FLAGS, *no_data, *grpc),
                  "strict": launch_server(store, logs / "strict.log", *STRICT_FLAGS, "--grpc-port",
                                          str(free_port()))}) as started:
        yield started


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
