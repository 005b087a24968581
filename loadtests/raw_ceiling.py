"""The throughput ceiling: raw ONNX Runtime in-process, no HTTP, no decode, in its fastest thread layout."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.runtimes import cpu_session_options


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


def raw_layouts(model_path: Path, feed: dict[str, np.ndarray], cores: int) -> dict[str, list[ort.InferenceSession]]:
    """Warmed-up sessions with the server's options, in two layouts.

    ``1xN``: one session with N intra-op threads; ``Nx1``: N single-threaded sessions run side by side
    (what the server does with ``--workers N``). The faster of the two is the ceiling.
    """

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
