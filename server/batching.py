"""Dynamic micro-batching: concurrent requests for one model are stacked into one inference call.

A batch is flushed when it holds ``max_batch`` images or when its first request has waited
``max_delay``; with ``max_delay`` 0 an idle model runs a lone request at once, and batches form from what
queued while the model was busy. With ``buckets`` every batch is padded to the smallest bucket size that holds
it (a GPU runtime then meets only shapes it was warmed up on); the padded rows never reach an answer. A batch
only holds inputs of one shape: a request of another shape waits, oldest first, for
the next batch. A request of more than ``max_batch`` images runs alone, in chunks of ``max_batch``.
Ordinary requests waiting behind an exclusive stack (a ``/robustness`` batch of n copies) run first, at most
``PASSES_PER_STACK`` batches of them per stack, so a single image never waits for several stacks queued just before
it, and a stack never waits for ever. The queue is bounded: a full queue refuses at once (the caller answers 503).
Each request may carry a deadline; a request past it is answered with ``DeadlineExceededError`` (504); a
queued request that is answered (deadline passed, or its client gone) leaves the queue at once, so the depth and
the queue bound count only requests still waiting for an answer, even while a long batch runs; a batch run in
chunks stops before its next chunk once none of its requests still wants an answer. Inference runs in an
executor, so the event loop stays free; at most ``concurrency`` batches of one model run at the same time. Should
the batching loop itself fail (a bug, not a runtime error: those reach their batch's requests), the requests not
yet running get its error and the loop starts again, so one bad turn never leaves a model silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PASSES_PER_STACK = 4  # ordinary batches that may run ahead of one waiting exclusive stack
RESTART_DELAY = 0.1  # seconds before a failed batching loop starts again (a loop that always fails never spins)

log = logging.getLogger("server.batching")


class QueueFullError(RuntimeError):
    """The model's queue holds ``queue_size`` requests already."""


class DeadlineExceededError(RuntimeError):
    """The request's deadline passed before its answer was ready."""


class _Abandoned(Exception):
    """No request of a batch run in chunks still wanted its answer when its next chunk was due."""


@dataclass(frozen=True)
class BatchResult:
    """One request's slice of a batch output, plus how it was served."""

    outputs: np.ndarray
    batch_size: int  # images in the batch this request ran in
    queue_seconds: float  # from submission to the start of its batch
    inference_seconds: float  # wall time of the batch


@dataclass(eq=False, repr=False)  # by identity, and never printed: fields would compare or print the images
class _Pending:
    images: Stack
    future: asyncio.Future
    submitted: float
    deadline: float | None
    exclusive: bool
    passed: int = 0  # ordinary batches that have run ahead of this exclusive stack while it waited
    started: bool = False  # handed to a running batch
    size: int = field(init=False)
    shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.size, self.shape = len(self.images), tuple(self.images.shape[1:])

    def wanted(self) -> bool:
        """Whether an answer is still awaited; read from the inference thread, so it changes nothing."""
        return not self.future.done() and (self.deadline is None or time.monotonic() < self.deadline)

    def live(self) -> bool:
        """False once answered (cancelled, or its deadline passed); a request past its deadline is answered 504."""
        if self.future.done():
            return False
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.future.set_exception(DeadlineExceededError("the deadline passed while queued"))
            return False
        return True


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(DeadlineExceededError("the deadline passed before the result was ready"))


Stack = Any  # an (n, C, H, W) np.ndarray, or a torch.Tensor prepared on the model's device


def same_kind(stacks: list[Stack]) -> list[Stack]:
    """The stacks as one kind of array: all NumPy, or, when any is a torch tensor (decoded on the device), all
    torch tensors on that tensor's device."""
    device_stacks = [stack for stack in stacks if not isinstance(stack, np.ndarray)]
    if not device_stacks or len(device_stacks) == len(stacks):
        return stacks
    import torch

    device = device_stacks[0].device
    return [torch.from_numpy(stack).to(device) if isinstance(stack, np.ndarray) else stack for stack in stacks]


BatchObserver = Callable[[int, float], None]  # (batch size, inference seconds)
OutcomeObserver = Callable[[BaseException | None], None]  # after each batch: None, or what it raised


@dataclass(frozen=True)
class BatchPolicy:
    """How a model's requests are batched and bounded.

    ``max_delay`` (seconds) is how long a batch's first request waits for company (0: none); ``concurrency`` is
    how many batches run at once; a batch running past ``hang_timeout`` seconds is reported; ``buckets`` are the
    sizes batches are padded to (empty: none; else ending at ``max_batch``).
    """

    max_batch: int
    max_delay: float = 0.0
    queue_size: int = 64
    concurrency: int = 1
    hang_timeout: float | None = None
    buckets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.queue_size < 1 or self.max_delay < 0 or self.concurrency < 1:
            raise ValueError(f"max_batch={self.max_batch}, queue_size={self.queue_size} and concurrency="
                             f"{self.concurrency} must be >= 1, max_delay={self.max_delay} >= 0")
        object.__setattr__(self, "buckets", tuple(sorted(set(self.buckets))))
        if self.buckets and (self.buckets[0] < 1 or self.buckets[-1] != self.max_batch):
            raise ValueError(f"batch buckets {list(self.buckets)} must be >= 1 and end at max_batch={self.max_batch}")


@dataclass(frozen=True)
class BatchObservers:
    """What a batcher reports as it works: each batch, queue depth, running batches, outcomes, hangs."""

    on_batch: BatchObserver | None = None
    on_depth: Callable[[int], None] | None = None
    on_running: Callable[[int], None] | None = None
    on_outcome: OutcomeObserver | None = None
    on_hang: Callable[[float], None] | None = None


class MicroBatcher:
    """Groups submitted image stacks into batches of at most ``max_batch`` images."""

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], executor: Executor, policy: BatchPolicy,
                 observers: BatchObservers | None = None) -> None:
        self.run_batch, self.executor, self.policy = run_batch, executor, policy
        self.observers = observers or BatchObservers()
        self._queue: deque[_Pending] = deque()  # in arrival order; bounded by submit()
        self._arrived = asyncio.Event()  # set when the queue gains a request
        self._set_aside: deque[_Pending] = deque()  # taken from the queue, waiting for a batch of their shape
        self._unanswered: set[_Pending] = set()  # submitted, future not done yet
        self._task: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()

    @property
    def depth(self) -> int:
        """Requests waiting for an answer, not yet in a batch."""
        return len(self._queue) + len(self._set_aside)

    @property
    def running(self) -> int:
        """Batches handed to the executor and not finished yet."""
        return len(self._running)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._slots = self._slots or asyncio.Semaphore(self.policy.concurrency)
            self._spawn(0.0)

    def _spawn(self, delay: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(delay), name="micro-batcher")
        self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task) -> None:
        """Answer the requests a failed loop left waiting with its error, and start a new loop."""
        if task.cancelled() or task is not self._task:
            return
        error = task.exception()
        log.error("the batching loop failed; its waiting requests get the error and the loop restarts",
                  exc_info=error)
        for item in list(self._unanswered):
            if not item.started and not item.future.done():
                item.future.set_exception(RuntimeError(f"the batching loop failed: {error!r}"))
        self._queue.clear()
        self._set_aside.clear()
        self._report_depth()
        self._spawn(RESTART_DELAY)  # requests submitted meanwhile queue for the new loop

    async def stop(self) -> None:
        """Stop the loop; waiting requests get a CancelledError."""
        for task in list(self._running):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in [*self._queue, *self._set_aside]:
            item.future.cancel()

    async def submit(self, images: Stack, deadline: float | None = None, exclusive: bool = False) -> BatchResult:
        """Queue an (n, C, H, W) stack and wait for its outputs.

        ``deadline`` is a ``time.monotonic()`` instant. ``exclusive`` runs the stack as a batch of its
        own (same batch composition every time, so the same input gives the same output bits).
        """
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        item = _Pending(images, loop.create_future(), time.monotonic(), deadline, exclusive)
        if self.depth >= self.policy.queue_size:
            raise QueueFullError(f"{self.policy.queue_size} requests are already waiting")
        self._queue.append(item)
        self._unanswered.add(item)
        self._arrived.set()
        item.future.add_done_callback(lambda _: self._leave(item))
        self._report_depth()
        if deadline is None:
            return await item.future
        # One timer per request (cheaper than asyncio.wait_for); asyncio's clock is time.monotonic().
        timer = loop.call_at(deadline, _expire, item.future)
        try:
            return await item.future
        finally:
            timer.cancel()

    def _leave(self, item: _Pending) -> None:
        """Drop a request answered while it waited (deadline passed, client gone), so that it neither counts against
        the queue bound nor keeps its images; one already taken into a batch is in neither queue."""
        self._unanswered.discard(item)
        for waiting in (self._queue, self._set_aside):
            if item in waiting:  # deque.remove of an absent item would format its images into the error
                waiting.remove(item)
                self._report_depth()
                return

    def _report_depth(self) -> None:
        if self.observers.on_depth is not None:
            self.observers.on_depth(self.depth)

    def _report_running(self) -> None:
        if self.observers.on_running is not None:
            self.observers.on_running(self.running)

    async def _from_queue(self, timeout: float | None) -> _Pending | None:
        """The next live queued request, or None after ``timeout`` seconds (None: wait for ever)."""
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._queue:
                item = self._queue.popleft()
                if item.live():
                    return item
                self._report_depth()  # its deadline passed before its timer fired
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return None

    def _first_set_aside(self) -> _Pending | None:
        """The oldest live request set aside earlier (it goes first: nothing waits behind later arrivals)."""
        while self._set_aside:
            item = self._set_aside.popleft()
            if item.live():
                return item
            self._report_depth()
        return None

    async def _waiting_ordinary(self) -> _Pending | None:
        """The oldest live ordinary (not exclusive) request already waiting, taken out of line; queued requests
        looked at before it are set aside, in order."""
        for item in self._set_aside:
            if not item.exclusive and item.live():
                self._set_aside.remove(item)
                return item
        while (item := await self._from_queue(0)) is not None:  # timeout 0: never waits
            if not item.exclusive:
                return item
            self._set_aside.append(item)
        return None

    async def _collect(self) -> list[_Pending]:
        first = self._first_set_aside() or await self._from_queue(None)
        assert first is not None
        if first.exclusive and first.passed < PASSES_PER_STACK:
            ordinary = await self._waiting_ordinary()
            if ordinary is not None:  # ordinary requests go first; the stack waits a bounded number of batches
                first.passed += 1
                self._set_aside.appendleft(first)
                first = ordinary
        batch, count = [first], first.size
        if first.exclusive:
            return batch
        kept: deque[_Pending] = deque()
        while self._set_aside:  # older requests of the same shape join first, in order
            item = self._set_aside.popleft()
            if not item.live():
                continue
            if not item.exclusive and item.shape == first.shape and count + item.size <= self.policy.max_batch:
                batch.append(item)
                count += item.size
            else:
                kept.append(item)
        self._set_aside = kept
        flush_at = time.monotonic() + self.policy.max_delay
        while count < self.policy.max_batch:
            item = await self._from_queue(flush_at - time.monotonic())
            if item is None:
                break
            if item.shape != first.shape and not item.exclusive:
                self._set_aside.append(item)
                continue
            if item.exclusive or count + item.size > self.policy.max_batch:
                self._set_aside.append(item)
                break
            batch.append(item)
            count += item.size
        return batch

    async def _loop(self, delay: float) -> None:
        await asyncio.sleep(delay)
        slots = self._slots
        assert slots is not None
        while True:
            await slots.acquire()  # at most `concurrency` batches run at once
            try:
                batch = await self._collect()
            except BaseException:
                slots.release()
                raise
            for item in batch:
                item.started = True
            self._report_depth()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            self._report_running()
            task.add_done_callback(lambda done: (self._running.discard(done), slots.release(), self._report_running()))

    def bucket_for(self, size: int) -> int:
        """The batch size a batch of ``size`` images runs at: the smallest bucket that holds it (no buckets: its
        own size)."""
        return next((bucket for bucket in self.policy.buckets if bucket >= size), size)

    def _padded(self, stacks: list[Stack], start: int, stop: int) -> Stack:
        """Rows ``start:stop`` of the stacks laid end to end, in one buffer of the bucket's size (one copy; zero
        rows pad it)."""
        size = stop - start
        bucket = self.bucket_for(size)
        if bucket == size and len(stacks) == 1:
            return stacks[0][start:stop]
        first = stacks[0]
        shape = (bucket, *first.shape[1:])
        out = np.empty(shape, dtype=first.dtype) if isinstance(first, np.ndarray) else first.new_empty(shape)
        row, offset = 0, 0
        for stack in stacks:
            lo, hi = max(start - offset, 0), min(stop - offset, len(stack))
            if lo < hi:
                out[row:row + hi - lo] = stack[lo:hi]
                row += hi - lo
            offset += len(stack)
        out[row:] = 0
        return out

    def _stack_and_run(self, batch: list[_Pending]) -> np.ndarray:
        """Concatenate (in the inference thread, not on the event loop) and run, in chunks of ``max_batch``, each
        padded to its bucket; only the real rows of each output are kept. Chunks stop (``_Abandoned``) once no
        request of the batch wants its answer any more: past their deadlines, or their clients gone."""
        stacks = same_kind([p.images for p in batch])
        total = sum(len(stack) for stack in stacks)
        if total <= self.policy.max_batch and not self.policy.buckets and len(stacks) == 1:
            return self.run_batch(stacks[0])
        outputs = []
        for start in range(0, total, self.policy.max_batch):
            if start and not any(p.wanted() for p in batch):
                raise _Abandoned
            stop = min(start + self.policy.max_batch, total)
            outputs.append(self.run_batch(self._padded(stacks, start, stop))[:stop - start])
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    async def _watch(self, running: asyncio.Future) -> np.ndarray:
        """Await a running batch; past ``hang_timeout`` report it as hung (it keeps its slot: a thread cannot be
        killed), then go on waiting."""
        if self.policy.hang_timeout is None:
            return await running
        try:
            return await asyncio.wait_for(asyncio.shield(running), self.policy.hang_timeout)
        except TimeoutError:
            if self.observers.on_hang is not None:
                self.observers.on_hang(self.policy.hang_timeout)
            return await running

    async def _run(self, batch: list[_Pending]) -> None:
        """Run one batch in the executor and hand each request its rows."""
        size = sum(p.size for p in batch)
        started = time.monotonic()
        try:
            outputs = await self._watch(asyncio.get_running_loop().run_in_executor(self.executor, self._stack_and_run,
                                                                                   batch))
        except _Abandoned:  # not a runtime failure: nobody waits for the rest
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(DeadlineExceededError("the deadline passed while its batch ran"))
            return
        except Exception as exc:  # the runtime failed: every request of the batch gets the error
            if self.observers.on_outcome is not None:
                self.observers.on_outcome(exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        if self.observers.on_outcome is not None:
            self.observers.on_outcome(None)
        elapsed = time.monotonic() - started
        if self.observers.on_batch is not None:
            self.observers.on_batch(size, elapsed)
        offset = 0
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(BatchResult(outputs[offset:offset + pending.size], size,
                                                      started - pending.submitted, elapsed))
            offset += pending.size
