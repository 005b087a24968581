"""Dataset-level robustness evaluations as background jobs: the CLI's code, run on the served models.

A job takes its place in the bounded queue before anything of its dataset is read; its annotations are then parsed
on a loader thread of its own (never the decode pool) and it runs on one evaluation thread; a few more may wait.
Its inference goes through the model's runner like any request (batched, health-tracked, sharing the model's
threads), so a job slows traffic down but never holds a second copy of a model. A job reads only datasets under
``--data-dir``, and names paths relative to it. Its work (loading, evaluating, statistics, writing the report) has
a wall-clock limit, ``--eval-timeout-s``; a cancelled or timed-out job ends at once and its thread stops at the next
image, batch, bootstrap resample or file. Its report stays readable until ``--max-eval-history`` newer jobs have
finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
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

from common.datasets import Checkpoint, EvalSet, evaluation_set
from model_store.manifest import Manifest
from robustness.evaluation import EvaluationCancelled, EvaluationConfig, evaluate, write_outputs
from server.runner import ModelRunner

log = logging.getLogger("server.evaluations")

POLL_SECONDS = 0.25  # how often a job waiting on a batch looks whether it was cancelled
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
# What a job is doing: loading its annotations, waiting for the evaluation thread, then the evaluation's phases.
LOADING, WAITING, EVALUATING, WRITING = "loading", "waiting", "evaluating", "writing"


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
    def precision(self) -> str:
        """The precision the server runs this model at."""
        return self.runner.precision

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
    phase: str = LOADING
    done: int = 0
    total: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    report: dict[str, Any] | None = None
    files: dict[str, Path] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    worked: float = 0.0  # seconds of work before the evaluation thread took it (loading), against the time limit
    work: tuple[list[ServedModel], EvalSet] | None = field(default=None, repr=False)  # dropped once finished
    timer: threading.Timer | None = field(default=None, repr=False)
    clock: float = 0.0  # time.monotonic() when the timer started

    def checkpoint(self) -> None:
        """Raise EvaluationCancelled once the job was cancelled or ran out of time (its loader calls this)."""
        if self.stop.is_set():
            raise EvaluationCancelled(f"evaluation {self.id} stopped")

    def describe(self, with_report: bool = True) -> dict[str, Any]:
        """The job as JSON: status, progress, timings, and the report (or the error) when finished."""
        body: dict[str, Any] = {
            "id": self.id, "status": self.status, "phase": self.phase, "models": list(self.models), "data": self.data,
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


class TooManyEvaluationsError(RuntimeError):
    """Too many evaluations are waiting."""


class EvaluationJobs:
    """The server's evaluations: a bounded queue, a loader thread and an evaluation thread, a wall-clock limit per
    job, a bounded history, files in a temp folder."""

    def __init__(self, max_queued: int, max_history: int, timeout_s: float, data_dir: Path) -> None:
        self.max_queued, self.max_history, self.timeout_s = max_queued, max_history, timeout_s
        self.data_dir = data_dir
        self.jobs: OrderedDict[str, EvaluationJob] = OrderedDict()
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation-load")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation")
        self._folder: Path | None = None
        self.lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """Where the jobs' files go: a temporary folder made at the first job, deleted at close."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="occlusion-serve-evaluations-"))
        return self._folder

    def open(self, job: EvaluationJob) -> EvaluationJob:
        """Give a job its place before its dataset is read (TooManyEvaluationsError when ``max_queued`` jobs are already
        loading, waiting or running) and start its clock."""
        with self.lock:
            active = sum(1 for j in self.jobs.values() if j.status in (QUEUED, RUNNING))
            if active >= self.max_queued:
                raise TooManyEvaluationsError(f"{active} evaluations are queued or running (limit {self.max_queued}); "
                                     "wait for one to finish or cancel one")
            self.jobs[job.id] = job
            self._forget_old()
        self._start_clock(job, self.timeout_s)
        return job

    def discard(self, job: EvaluationJob) -> None:
        """Forget a job whose request was refused while it loaded (it never was an evaluation)."""
        self._stop_clock(job)
        job.stop.set()
        with self.lock:
            self.jobs.pop(job.id, None)

    def submit(self, job: EvaluationJob, models: list[ServedModel], eval_set: EvalSet) -> EvaluationJob:
        """Queue a loaded job for the evaluation thread (a job cancelled or timed out while loading stays so)."""
        job.worked += self._stop_clock(job)
        with self.lock:
            if job.status in FINISHED:
                return job
            job.total = min(len(eval_set), job.config.limit or len(eval_set))
            job.phase, job.work = WAITING, (models, eval_set)
        self.executor.submit(self._run, job)  # the work item holds only the job, whose data a cancel drops
        return job

    def get(self, job_id: str) -> EvaluationJob | None:
        """The job with this id, if the server still remembers it."""
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> EvaluationJob | None:
        """Cancel a job now, in whatever phase; its thread stops at its next image, batch, resample or file."""
        job = self.jobs.get(job_id)
        if job is not None:
            self._end(job, CANCELLED)
        return job

    def list(self) -> list[EvaluationJob]:
        """Every remembered job, newest first."""
        return list(reversed(self.jobs.values()))

    def close(self) -> None:
        """Cancel everything, let the threads go and delete the files."""
        for job in list(self.jobs.values()):
            self.cancel(job.id)
        self.loader.shutdown(wait=False, cancel_futures=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def relative(self, text: str) -> str:
        """``text`` with every absolute path under ``--data-dir`` written relative to it, and the jobs' folder
        named, not shown."""
        text = relative_paths(text, self.data_dir)
        return text.replace(str(self._folder), "<evaluation files>") if self._folder is not None else text

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.status in FINISHED]
        for job in finished[: max(0, len(finished) - self.max_history)]:
            del self.jobs[job.id]
            if self._folder is not None:
                shutil.rmtree(self._folder / job.id, ignore_errors=True)

    def _end(self, job: EvaluationJob, status: str, error: str | None = None) -> bool:
        """Finish a job that has not finished yet: its status, its thread told to stop, its data dropped."""
        with self.lock:
            if job.status in FINISHED:
                return False
            job.status, job.error, job.finished = status, error, time.time()
            job.work = None
        job.stop.set()
        self._stop_clock(job)
        return True

    def _start_clock(self, job: EvaluationJob, seconds: float) -> None:
        timer = threading.Timer(max(0.0, seconds), self._time_out, args=(job,))
        timer.daemon = True
        job.timer, job.clock = timer, time.monotonic()
        timer.start()

    def _stop_clock(self, job: EvaluationJob) -> float:
        """Stop the job's clock; the seconds it ran."""
        timer, job.timer = job.timer, None
        if timer is None:
            return 0.0
        timer.cancel()
        return time.monotonic() - job.clock

    def _time_out(self, job: EvaluationJob) -> None:
        if self._end(job, FAILED, f"timed out: the job's work (loading, evaluating, statistics, report) passed the "
                                  f"wall-clock limit of {self.timeout_s:g} s (--eval-timeout-s) while "
                                  f"{job.phase}"):
            log.warning("evaluation %s timed out after %g s while %s", job.id, self.timeout_s, job.phase)

    def _run(self, job: EvaluationJob) -> None:
        with self.lock:
            if job.status in FINISHED or job.work is None:
                return
            models, eval_set = job.work
            job.status, job.phase, job.started = RUNNING, EVALUATING, time.time()
        self._start_clock(job, self.timeout_s - job.worked)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def phase(name: str) -> None:
            job.phase = name

        out = self.folder / job.id
        try:
            report = evaluate(models, eval_set, job.config, progress=progress, should_stop=job.stop.is_set,
                              on_phase=phase)
            del models, eval_set
            report = self._public(report, job)
            job.phase = WRITING
            paths = write_outputs(report, out, should_stop=job.stop.is_set)
        except EvaluationCancelled:
            self._end(job, CANCELLED)  # unchanged when a cancel or the time limit ended it first
        except Exception as exc:  # a failed job is reported through its status, never raised into the server
            log.warning("evaluation %s failed: %s: %s", job.id, type(exc).__name__, exc)
            self._end(job, FAILED, self.relative(f"{type(exc).__name__}: {exc}"))
        else:
            with self.lock:
                if job.status not in FINISHED:
                    job.report, job.files, job.phase = report, {path.name: path for path in paths}, DONE
            self._end(job, DONE)
        if job.status != DONE:
            shutil.rmtree(out, ignore_errors=True)
        with self.lock:
            self._forget_old()

    def _public(self, report: dict[str, Any], job: EvaluationJob) -> dict[str, Any]:
        """The report as clients see it: the dataset as they named it, models by store entry, no absolute path."""
        report["dataset"]["root"] = job.data
        for model in report["models"]:
            model["path"] = f"{model['name']}/{model['version']}"  # the entry in the server's store
        return self._scrub(report)

    def _scrub(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.relative(node)
        if isinstance(node, dict):
            return {key: self._scrub(value) for key, value in node.items()}
        if isinstance(node, list):
            return [self._scrub(value) for value in node]
        return node


def relative_paths(text: str, data_dir: Path) -> str:
    """``text`` with absolute paths under ``data_dir`` (as given, and resolved) made relative to it ("." for the
    folder itself); a sibling whose name merely starts alike is left alone."""
    for root in sorted({str(data_dir.absolute()), str(data_dir.resolve())}, key=len, reverse=True):
        text = re.sub(re.escape(root) + r"(/+|(?=$|[\s'\"`:,;)\]}]|\.(?:\s|$)))",
                      lambda match: "" if match.group(1) else ".", text)
    return text


def dataset_path(data_dir: Path, name: str) -> Path:
    """The dataset ``name`` names under ``data_dir``; ValueError for anything that would leave it."""
    root = data_dir.resolve()
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        raise ValueError(f"data must be a path relative to the server's data folder, got {name!r}")
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"data {name!r} lies outside the server's data folder")
    return path


def load_eval_set(data_dir: Path, name: str, task: str, limit: int | None, max_annotation_bytes: int,
                  checkpoint: Checkpoint) -> EvalSet:
    """The test split of a dataset under ``data_dir`` for ``task`` (blocking; FileNotFoundError, ValueError,
    AnnotationTooLarge, and whatever ``checkpoint`` raises between records)."""
    return evaluation_set(dataset_path(data_dir, name), task, limit=limit, within=data_dir,
                          max_annotation_bytes=max_annotation_bytes, checkpoint=checkpoint)
