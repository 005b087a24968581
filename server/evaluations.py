"""Dataset-level robustness evaluations as background jobs: the CLI's code, run on the served models.

One job runs at a time on its own thread; a few more may wait. Its inference goes through the model's runner
like any request (batched, health-tracked, sharing the model's threads), so a job slows traffic down but never
holds a second copy of a model. A job reads only datasets under ``--data-dir``, stops between images when
cancelled, and its report stays readable until ``--max-eval-history`` newer jobs have finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_store.manifest import Manifest
from robustness.datasets import EvalSet, evaluation_set
from robustness.evaluation import EvaluationCancelled, EvaluationConfig, evaluate, write_outputs
from server.runner import ModelRunner

log = logging.getLogger("server.evaluations")

POLL_SECONDS = 0.25  # how often a job waiting on a batch looks whether it was cancelled
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class ServedModel:
    """A served model as the evaluator sees it: each batch goes through the runner's batcher on the event loop."""

    def __init__(self, runner: ModelRunner, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        self.runner, self.loop, self.stop = runner, loop, stop

    @property
    def name(self) -> str:
        """The model's name in the store."""
        return self.runner.name

    @property
    def manifest(self) -> Manifest:
        """The model's manifest."""
        return self.runner.manifest

    @property
    def providers(self) -> list[str]:
        """The runtime the server runs this model on."""
        return [self.runner.backend.provider]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Outputs for a float32 NCHW batch (blocks this worker thread, never the loop; gives up when stopped, so
        a server shutting down never waits on a batch its loop will not finish)."""
        future = asyncio.run_coroutine_threadsafe(self.runner(batch, exclusive=True), self.loop)
        while True:
            try:
                return future.result(timeout=POLL_SECONDS).outputs
            except concurrent.futures.TimeoutError:
                if self.stop.is_set():
                    future.cancel()
                    raise EvaluationCancelled from None


@dataclass
class EvaluationJob:
    """One evaluation: what was asked, where it stands, and its report once done."""

    models: tuple[str, ...]
    data: str
    config: EvaluationConfig
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = QUEUED
    done: int = 0
    total: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    report: dict[str, Any] | None = None
    files: dict[str, Path] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def describe(self, with_report: bool = True) -> dict[str, Any]:
        """The job as JSON: status, progress, timings, and the report (or the error) when finished."""
        body: dict[str, Any] = {
            "id": self.id, "status": self.status, "models": list(self.models), "data": self.data,
            "config": {"occlusion": list(self.config.occlusion), "corruptions": list(self.config.corruptions),
                       "severities": list(self.config.severities), "seed": self.config.seed,
                       "limit": self.config.limit, "bootstrap": self.config.bootstrap, "checks": self.config.checks},
            "progress": {"done": self.done, "total": self.total,
                         "fraction": round(self.done / self.total, 4) if self.total else 0.0},
            "created": self.created, "started": self.started, "finished": self.finished,
            "links": {"self": f"/evaluations/{self.id}",
                      "files": {name: f"/evaluations/{self.id}/files/{name}" for name in self.files}},
        }
        if self.error is not None:
            body["error"] = self.error
        if with_report and self.report is not None:
            body["report"] = self.report
        return body


class QueueFullError(RuntimeError):
    """Too many evaluations are waiting."""


class EvaluationJobs:
    """The server's evaluations: a bounded queue, one worker thread, a bounded history, files in a temp folder."""

    def __init__(self, max_queued: int, max_history: int) -> None:
        self.max_queued, self.max_history = max_queued, max_history
        self.jobs: OrderedDict[str, EvaluationJob] = OrderedDict()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation")
        self._folder: Path | None = None
        self.lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """Where the jobs' files go: a temporary folder made at the first job, deleted at close."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="occlusion-serve-evaluations-"))
        return self._folder

    def submit(self, job: EvaluationJob, models: list[ServedModel], eval_set: EvalSet) -> EvaluationJob:
        """Queue a job; QueueFullError when ``max_queued`` jobs are already waiting or running."""
        with self.lock:
            active = sum(1 for j in self.jobs.values() if j.status in (QUEUED, RUNNING))
            if active >= self.max_queued:
                raise QueueFullError(f"{active} evaluations are queued or running (limit {self.max_queued}); "
                                     "wait for one to finish or cancel one")
            job.total = min(len(eval_set), job.config.limit or len(eval_set))
            self.jobs[job.id] = job
            self._forget_old()
        self.executor.submit(self._run, job, models, eval_set)
        return job

    def get(self, job_id: str) -> EvaluationJob | None:
        """The job with this id, if the server still remembers it."""
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> EvaluationJob | None:
        """Ask a job to stop (a queued job never starts; a running one stops after its current image)."""
        job = self.jobs.get(job_id)
        if job is not None and job.status not in FINISHED:
            job.stop.set()
            if job.status == QUEUED:
                self._finish(job, CANCELLED)
        return job

    def list(self) -> list[EvaluationJob]:
        """Every remembered job, newest first."""
        return list(reversed(self.jobs.values()))

    def close(self) -> None:
        """Cancel everything, let the worker go and delete the files."""
        for job in list(self.jobs.values()):
            self.cancel(job.id)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.status in FINISHED]
        for job in finished[: max(0, len(finished) - self.max_history)]:
            del self.jobs[job.id]
            if self._folder is not None:
                shutil.rmtree(self._folder / job.id, ignore_errors=True)

    def _finish(self, job: EvaluationJob, status: str, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()

    def _run(self, job: EvaluationJob, models: list[ServedModel], eval_set: EvalSet) -> None:
        if job.stop.is_set():
            return
        job.status, job.started = RUNNING, time.time()

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            report = evaluate(models, eval_set, job.config, progress=progress, should_stop=job.stop.is_set)
            report["dataset"]["root"] = job.data  # the name the client gave, not the server's folder
            paths = write_outputs(report, self.folder / job.id)
        except EvaluationCancelled:
            self._finish(job, CANCELLED)
        except Exception as exc:  # a failed job is reported through its status, never raised into the server
            log.warning("evaluation %s failed: %s: %s", job.id, type(exc).__name__, exc)
            self._finish(job, FAILED, f"{type(exc).__name__}: {exc}")
        else:
            job.report = report
            job.files = {path.name: path for path in paths}
            self._finish(job, DONE)
        with self.lock:
            self._forget_old()


def dataset_path(data_dir: Path, name: str) -> Path:
    """The dataset ``name`` names under ``data_dir``; ValueError for anything that would leave it."""
    root = data_dir.resolve()
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        raise ValueError(f"data must be a path relative to the server's data folder, got {name!r}")
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"data {name!r} lies outside the server's data folder")
    return path


def load_eval_set(data_dir: Path, name: str, task: str, limit: int | None) -> EvalSet:
    """The test split of a dataset under ``data_dir`` for ``task`` (blocking; FileNotFoundError, ValueError)."""
    return evaluation_set(dataset_path(data_dir, name), task, limit=limit, within=data_dir)
