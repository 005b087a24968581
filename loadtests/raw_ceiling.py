"""The throughput ceiling: raw ONNX Runtime in-process, no HTTP, no decode, in its fastest thread layout."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.runtimes import GPU_PROVIDERS, OnnxBackend, choose_providers, cpu_session_options


@dataclass(frozen=True)
class Throughput:
    """Work done in a timed window."""

    count: int
    seconds: float
    errors: int = 0
    client_cpu: float = 0.0  # load-generator CPU seconds spent in the window
    server_cpu: float = 0.0  # server process CPU seconds spent in the window

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.count / self.seconds


class BoundSession:
    """The server's GPU backend seen as a session: ``run(None, feed)`` copies the batch to the device, runs it with
    IOBinding and copies the output back, exactly as a served batch does."""

    def __init__(self, model_path: Path, input_name: str, providers: Sequence[str], threads: int = 1) -> None:
        self.backend = OnnxBackend(model_path, input_name, "", providers=providers, threads=threads)
        self.backend.output_name = self.backend.session.get_outputs()[0].name
        self.provider = self.backend.provider

    def run(self, _outputs: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One forward pass of the feed's single input."""
        return [self.backend.run(next(iter(feed.values())))]


def raw_layouts(model_path: Path, feed: dict[str, np.ndarray], cores: int,
                providers: Sequence[str] = ()) -> dict[str, list]:
    """Warmed-up sessions with the server's options, on the provider the server would choose for ``providers``.

    On a GPU provider one layout, named after it: the server's own backend (IOBinding) in a loop. On the CPU two:
    ``1xN``, one session with N intra-op threads, and ``Nx1``, N single-threaded sessions run side by side (what
    the server does with ``--workers N``). The faster of the two is the ceiling.
    """
    chosen = choose_providers(ort.get_available_providers(), providers)
    if chosen[0] in GPU_PROVIDERS:
        bound = BoundSession(model_path, next(iter(feed)), chosen, threads=cores)
        for _ in range(3):
            bound.run(None, feed)
        return {bound.provider.removesuffix("ExecutionProvider").lower(): [bound]}

    def session(threads: int) -> ort.InferenceSession:
        created = ort.InferenceSession(str(model_path), sess_options=cpu_session_options(threads),
                                       providers=["CPUExecutionProvider"])
        for _ in range(3):
            created.run(None, feed)
        return created

    layouts = {f"1x{cores}": [session(cores)]}
    if cores > 1:
        layouts[f"{cores}x1"] = [session(1) for _ in range(cores)]
    return layouts


def _loop(session: ort.InferenceSession, feed: dict[str, np.ndarray], seconds: float) -> int:
    done, start = 0, time.perf_counter()
    batch = len(next(iter(feed.values())))
    while time.perf_counter() - start < seconds:
        session.run(None, feed)
        done += batch
    return done


def raw_onnxruntime(sessions: list[ort.InferenceSession], feed: dict[str, np.ndarray], seconds: float) -> Throughput:
    """Images/s of loops over full batches, one thread per session (``server_cpu``: this process's CPU time)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(len(sessions)) as pool:
        done = sum(pool.map(lambda session: _loop(session, feed, seconds), sessions))
    return Throughput(done, time.perf_counter() - start, server_cpu=time.process_time() - cpu_start)


def best_raw(layouts: dict[str, list[ort.InferenceSession]], feed: dict[str, np.ndarray],
             seconds: float) -> tuple[str, Throughput]:
    """Run every layout for ``seconds``; the fastest one and its throughput."""
    runs = {name: raw_onnxruntime(sessions, feed, seconds) for name, sessions in layouts.items()}
    name = max(runs, key=lambda key: runs[key].rate)
    return name, runs[name]
