"""Dynamic micro-batching: concurrent requests for one model are stacked into one inference call.

A batch is flushed when it holds ``max_batch`` images or when its first request has waited
``max_delay``. The queue is bounded: a full queue refuses at once (the caller answers 503). Each
request may carry a deadline; a request past it is answered with ``DeadlineExceededError`` (504) and is
dropped from the queue if it has not started. Inference runs in an executor, so the event loop stays
free; at most ``concurrency`` batches of one model run at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np


class QueueFullError(RuntimeError):
    """The model's queue holds ``queue_size`` requests already."""


class DeadlineExceededError(RuntimeError):
    """The request's deadline passed before its answer was ready."""


@dataclass(frozen=True)
class BatchResult:
    """One request's slice of a batch output, plus how it was served."""

    outputs: np.ndarray
    batch_size: int  # images in the batch this request ran in
    queue_seconds: float  # from submission to the start of its batch
    inference_seconds: float  # wall time of the batch


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future
    submitted: float
    deadline: float | None
    exclusive: bool
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.images)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(DeadlineExceededError("the deadline passed before the result was ready"))


BatchObserver = Callable[[int, float], None]  # (batch size, inference seconds)


class MicroBatcher:
    """Groups submitted image stacks into batches of at most ``max_batch`` images."""

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], executor: Executor, max_batch: int,
                 max_delay: float, queue_size: int, on_batch: BatchObserver | None = None,
                 on_depth: Callable[[int], None] | None = None, concurrency: int = 1,
                 on_running: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or queue_size < 1 or max_delay < 0 or concurrency < 1:
            raise ValueError(f"max_batch={max_batch}, queue_size={queue_size} and concurrency={concurrency} "
                             f"must be >= 1, max_delay={max_delay} >= 0")
        self.run_batch, self.executor = run_batch, executor
        self.max_batch, self.max_delay, self.queue_size = max_batch, max_delay, queue_size
        self.on_batch, self.on_depth, self.on_running = on_batch, on_depth, on_running
        self.concurrency = concurrency
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._carry: _Pending | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    @property
    def depth(self) -> int:
        """Requests waiting, not yet in a running batch."""
        return self._queue.qsize() + (self._carry is not None)

    @property
    def running(self) -> int:
        """Batches handed to the executor and not finished yet."""
        return len(self._running)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the loop; waiting requests get a CancelledError."""
        for task in list(self._running):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def submit(self, images: np.ndarray, deadline: float | None = None, exclusive: bool = False) -> BatchResult:
        """Queue an (n, C, H, W) stack and wait for its outputs.

        ``deadline`` is a ``time.monotonic()`` instant. ``exclusive`` runs the stack as a batch of its
        own (same batch composition every time, so the same input gives the same output bits).
        """
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        item = _Pending(images, loop.create_future(), time.monotonic(), deadline, exclusive)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.queue_size} requests are already waiting") from None
        self._report_depth()
        if deadline is None:
            return await item.future
        # One timer per request (cheaper than asyncio.wait_for); asyncio's clock is time.monotonic().
        timer = loop.call_at(deadline, _expire, item.future)
        try:
            return await item.future
        finally:
            timer.cancel()

    def _report_depth(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self.depth)

    def _report_running(self) -> None:
        if self.on_running is not None:
            self.on_running(self.running)

    async def _next(self, timeout: float | None) -> _Pending | None:
        """The next live request: the carried one, a queued one, or None after ``timeout`` seconds."""
        while True:
            if self._carry is not None:
                item, self._carry = self._carry, None
            elif timeout is None:
                item = await self._queue.get()
            else:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    if timeout <= 0:
                        return None
                    try:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        return None
            if item.future.done():  # cancelled: the client left or its deadline passed
                continue
            if item.deadline is not None and time.monotonic() >= item.deadline:
                item.future.set_exception(DeadlineExceededError("the deadline passed while queued"))
                continue
            return item

    async def _collect(self) -> list[_Pending]:
        first = await self._next(None)
        assert first is not None
        batch, count = [first], first.size
        if first.exclusive:
            return batch
        flush_at = time.monotonic() + self.max_delay
        while count < self.max_batch:
            item = await self._next(flush_at - time.monotonic())
            if item is None:
                break
            if item.exclusive or count + item.size > self.max_batch:
                self._carry = item
                break
            batch.append(item)
            count += item.size
        return batch

    async def _loop(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            await slots.acquire()  # at most `concurrency` batches run at once
            batch = await self._collect()
            self._report_depth()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            self._report_running()
            task.add_done_callback(lambda done: (self._running.discard(done), slots.release(), self._report_running()))

    def _stack_and_run(self, stacks: list[np.ndarray]) -> np.ndarray:
        """Concatenate (in the inference thread, not on the event loop) and run."""
        return self.run_batch(stacks[0] if len(stacks) == 1 else np.concatenate(stacks))

    async def _run(self, batch: list[_Pending]) -> None:
        """Run one batch in the executor and hand each request its rows."""
        stacks = [p.images for p in batch]
        size = sum(p.size for p in batch)
        started = time.monotonic()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self._stack_and_run, stacks)
        except Exception as exc:  # the runtime failed: every request of the batch gets the error
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        elapsed = time.monotonic() - started
        if self.on_batch is not None:
            self.on_batch(size, elapsed)
        offset = 0
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(BatchResult(outputs[offset:offset + pending.size], size,
                                                      started - pending.submitted, elapsed))
            offset += pending.size
