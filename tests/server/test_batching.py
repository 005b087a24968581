"""MicroBatcher: grouping, the max-batch cap, exclusive batches, the bounded queue and deadlines."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.batching import (
    PASSES_PER_STACK,
    BatchObservers,
    BatchPolicy,
    DeadlineExceededError,
    MicroBatcher,
    QueueFullError,
)


class RecordingModel:
    """Doubles its input and remembers every batch size; can be slowed down, made to fail, or gated: a gated
    model holds each batch until the test sets ``gate``, so that a test knows a batch is running (``entered``)
    without betting on a sleep."""

    def __init__(self, delay: float = 0.0, fail: bool = False, gated: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay, self.fail = delay, fail
        self.threads: set[str] = set()
        self.entered = 0
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.sizes.append(len(images))
        self.entered += 1
        if not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("runtime exploded")
        return images * 2


def run(coro):
    return asyncio.run(coro)


OBSERVERS = {field.name for field in dataclasses.fields(BatchObservers)}


async def with_batcher(model: RecordingModel, body, batcher_class: type[MicroBatcher] = MicroBatcher, **kwargs):
    """Run ``body(batcher)`` with a batcher over ``model``; kwargs are BatchPolicy fields and BatchObservers."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="infer-test")
    policy = {"max_batch": 4, "max_delay": 0.05, "queue_size": 16,
              **{k: v for k, v in kwargs.items() if k not in OBSERVERS}}
    batcher = batcher_class(model, executor, BatchPolicy(**policy),
                            BatchObservers(**{k: v for k, v in kwargs.items() if k in OBSERVERS}))
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()
        executor.shutdown()


async def until(condition, timeout: float = 10.0) -> None:
    """Yield to the event loop until ``condition()`` holds."""
    stop = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < stop, "the condition never held"
        await asyncio.sleep(0.001)


def stack(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 1, 2, 2), value, dtype=np.float32)


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
    model = RecordingModel()

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(stack(i)) for i in range(3)))

    results = run(with_batcher(model, body))
    assert model.sizes == [3]
    assert [float(r.outputs[0, 0, 0, 0]) for r in results] == [0.0, 2.0, 4.0]
    assert all(r.batch_size == 3 for r in results)
    assert model.threads == {"infer-test_0"}  # inference runs off the event loop thread


def test_batches_never_exceed_max_batch_and_keep_request_order():
    model = RecordingModel()

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(stack(i, n=2)) for i in range(5)))

    results = run(with_batcher(model, body))
    assert model.sizes == [4, 4, 2]
    assert [r.outputs.shape[0] for r in results] == [2] * 5
    assert [float(r.outputs[1, 0, 0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_a_lone_request_waits_at_most_max_delay():
    model = RecordingModel()

    async def body(batcher):
        start = time.monotonic()
        result = await batcher.submit(stack(1))
        return time.monotonic() - start, result

    elapsed, result = run(with_batcher(model, body, max_delay=0.02))
    assert result.batch_size == 1 and 0.015 <= elapsed < 0.5


def test_exclusive_stacks_run_alone():
    model = RecordingModel()

    async def body(batcher):
        return await asyncio.gather(batcher.submit(stack(1)), batcher.submit(stack(2, n=3), exclusive=True),
                                    batcher.submit(stack(3)))

    results = run(with_batcher(model, body, max_batch=8))
    assert sorted(model.sizes) == [1, 1, 3] and results[1].batch_size == 3


class FirstValues(RecordingModel):
    """Also remembers the first value of every batch, which names the request that opened it."""

    def __init__(self) -> None:
        super().__init__(gated=True)
        self.firsts: list[float] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.firsts.append(float(images[0, 0, 0, 0]))
        return super().__call__(images)


def test_ordinary_requests_queued_behind_stacks_run_first_and_a_stack_waits_at_most_four_batches():
    assert PASSES_PER_STACK == 4
    model = FirstValues()

    async def body(batcher):
        running = asyncio.ensure_future(batcher.submit(stack(100, n=3), exclusive=True))
        await until(lambda: model.entered == 1)  # the first stack is running
        waiting = [asyncio.ensure_future(batcher.submit(stack(200 + k, n=3), exclusive=True)) for k in range(2)]
        await asyncio.sleep(0)
        singles = [asyncio.ensure_future(batcher.submit(stack(k, n=3))) for k in range(6)]  # one per batch
        await until(lambda: batcher.depth == 8)
        model.gate.set()
        return await asyncio.gather(running, *waiting, *singles)

    results = run(with_batcher(model, body, max_batch=3, max_delay=0.0))
    # four ordinary batches pass the first waiting stack, then it runs; the second lets the two left go first
    assert model.firsts == [100, 0, 1, 2, 3, 200, 4, 5, 201]
    assert [r.outputs[0, 0, 0, 0] for r in results] == [200, 400, 402, 0, 2, 4, 6, 8, 10]


def test_full_queue_refuses_immediately():
    model = RecordingModel(gated=True)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(stack(0)))
        await until(lambda: model.entered == 1)  # the first batch is running; the queue is empty again
        second = asyncio.ensure_future(batcher.submit(stack(1)))
        await until(lambda: batcher.depth == 1)
        start = time.monotonic()
        with pytest.raises(QueueFullError, match="1 requests are already waiting"):
            await batcher.submit(stack(2))
        refused_after = time.monotonic() - start
        model.gate.set()
        await asyncio.gather(first, second)
        return refused_after

    # the batch is held until the gate opens, so a refusal that waited for room would not come at all
    assert run(with_batcher(model, body, max_batch=1, max_delay=0.0, queue_size=1)) < 1.0
    assert model.sizes == [1, 1]


def test_running_batches_and_queue_depth_are_reported_as_they_change():
    model = RecordingModel(gated=True)
    running: list[int] = []
    depths: list[int] = []

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(stack(0)))
        await until(lambda: model.entered == 1)
        during = batcher.running
        second = asyncio.ensure_future(batcher.submit(stack(1)))
        await until(lambda: batcher.depth == 1)
        model.gate.set()
        await asyncio.gather(first, second)
        await asyncio.sleep(0)  # done-callbacks run on the next loop turn
        return during, batcher.running

    assert run(with_batcher(model, body, max_batch=1, max_delay=0.0, on_running=running.append,
                            on_depth=depths.append)) == (1, 0)
    assert running == [1, 0, 1, 0]
    assert max(depths) == 1 and depths[-1] == 0


def test_deadline_gives_up_and_a_queued_request_past_it_is_never_run():
    """The expired request is never run, and it leaves the queue and the reported depth as its deadline passes,
    while the batch ahead of it still runs (it used to stay counted until the loop next pulled from the queue)."""
    model = RecordingModel(gated=True)
    depths: list[int] = []

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(stack(0)))
        await until(lambda: model.entered == 1)
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(stack(1), deadline=time.monotonic() + 0.05)
        await until(lambda: batcher.depth == 0)
        during = list(depths)
        model.gate.set()
        await first
        return during

    assert run(with_batcher(model, body, max_batch=1, max_delay=0.0, on_depth=depths.append)) == [1, 0, 1, 0]
    assert model.sizes == [1] and model.entered == 1


def test_requests_whose_clients_leave_give_their_places_back_while_a_batch_runs():
    """Under overload clients that give up must not keep the queue full: their places are free at once, before the
    running batch ends, and what they sent is never run."""
    model = RecordingModel(gated=True)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(stack(0)))
        await until(lambda: model.entered == 1)
        gone = [asyncio.ensure_future(batcher.submit(stack(k))) for k in (1, 2)]
        await until(lambda: batcher.depth == 2)
        for task in gone:
            task.cancel()
        await until(lambda: batcher.depth == 0)
        assert model.entered == 1  # the first batch is still held
        fresh = [asyncio.ensure_future(batcher.submit(stack(k))) for k in (3, 4)]  # a full queue would refuse these
        await until(lambda: batcher.depth == 2)
        model.gate.set()
        return await asyncio.gather(first, *fresh)

    results = run(with_batcher(model, body, max_batch=2, max_delay=0.0, queue_size=2))
    assert model.sizes == [1, 2]
    assert [float(r.outputs[0, 0, 0, 0]) for r in results] == [0.0, 6.0, 8.0]


def test_stacks_and_requests_of_two_shapes_queued_behind_a_batch_are_all_answered():
    """Two waiting stacks, then requests of two shapes: the second shape is set aside behind the stacks, and taking
    it out of line used to compare it with a stack's images (a ValueError that stopped the model's batching loop)."""
    model = FirstValues()

    async def body(batcher):
        running = asyncio.ensure_future(batcher.submit(stack(1)))
        await until(lambda: model.entered == 1)
        stacks = [asyncio.ensure_future(batcher.submit(stack(10 + k, n=3), exclusive=True)) for k in range(2)]
        await asyncio.sleep(0)
        small = asyncio.ensure_future(batcher.submit(stack(20)))
        large = asyncio.ensure_future(batcher.submit(np.full((1, 1, 3, 3), 30, np.float32)))
        await until(lambda: batcher.depth == 4)
        model.gate.set()
        return await asyncio.wait_for(asyncio.gather(running, *stacks, small, large), 10)

    results = run(with_batcher(model, body, max_batch=4, max_delay=0.0))
    assert model.firsts == [1, 20, 30, 10, 11]  # the two ordinary requests pass the stacks, one batch per shape
    assert [float(r.outputs[0, 0, 0, 0]) for r in results] == [2, 20, 22, 40, 60]


class BrokenOnce(MicroBatcher):
    """A batcher with a bug in forming its first batch, which it finds after taking the batch out of the queue."""

    broken = True

    async def _collect(self):
        batch = await super()._collect()
        if self.broken:
            self.broken = False
            raise ValueError("a bug in forming a batch")
        return batch


def test_a_failed_batching_loop_answers_its_waiting_requests_and_starts_again(caplog):
    """The requests the failed turn held get its error (not a wait for ever), it is logged, and the new loop answers
    the next request with the single slot the failed turn had taken (concurrency 1)."""
    model = RecordingModel()

    async def body(batcher):
        with pytest.raises(RuntimeError, match=r"the batching loop failed: ValueError\('a bug in forming"):
            await asyncio.wait_for(batcher.submit(stack(1)), 5)
        depth = batcher.depth
        return depth, await asyncio.wait_for(batcher.submit(stack(2)), 5)

    depth, answer = run(with_batcher(model, body, batcher_class=BrokenOnce, max_delay=0.0))
    assert depth == 0 and model.sizes == [1] and float(answer.outputs[0, 0, 0, 0]) == 4.0
    assert [r.getMessage() for r in caplog.records if r.name == "server.batching"] == [
        "the batching loop failed; its waiting requests get the error and the loop restarts"]


class AlwaysBroken(MicroBatcher):
    """A batcher whose every turn fails before it takes anything from the queue."""

    turns = 0

    async def _collect(self):
        self.turns += 1
        raise ValueError("a bug in every turn")


def test_a_loop_that_always_fails_answers_every_request_and_does_not_spin():
    """Each failed loop waits RESTART_DELAY (0.1 s) before the next: in 0.5 s at most six turns, not thousands,
    and a request submitted meanwhile gets the error instead of waiting for ever."""
    model = RecordingModel()

    async def body(batcher):
        with pytest.raises(RuntimeError, match="the batching loop failed"):
            await asyncio.wait_for(batcher.submit(stack(1)), 5)
        before = batcher.turns
        await asyncio.sleep(0.5)
        return batcher.turns - before

    assert run(with_batcher(model, body, batcher_class=AlwaysBroken)) <= 6
    assert model.sizes == []

def test_a_chunked_batch_stops_once_its_request_is_past_its_deadline():
    """A stack of 10 at max_batch 2 is five chunks of 0.3 s; its 0.45 s deadline passes during the second (or the
    first, on a machine slow to start it), so no later chunk runs, and the model is not reported as failing."""
    model = RecordingModel(delay=0.3)
    outcomes: list = []

    async def body(batcher):
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(stack(1, n=10), deadline=time.monotonic() + 0.45, exclusive=True)
        await asyncio.sleep(0.9)  # long enough for three more chunks, had they run
        return await batcher.submit(stack(2))  # the model still answers

    answer = run(with_batcher(model, body, max_batch=2, max_delay=0.0, on_outcome=outcomes.append))
    chunks = model.sizes[:-1]
    assert chunks in ([2], [2, 2]) and model.sizes[-1] == 1 and answer.outputs[0, 0, 0, 0] == 4
    assert outcomes == [None]  # only the last request's batch reports an outcome; the abandoned one is no failure


def test_runtime_errors_reach_every_request_of_the_batch():
    model = RecordingModel(fail=True)

    async def body(batcher):
        return await asyncio.gather(batcher.submit(stack(0)), batcher.submit(stack(1)), return_exceptions=True)

    results = run(with_batcher(model, body))
    assert [str(r) for r in results] == ["runtime exploded", "runtime exploded"]


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError, match="max_batch=0"):
        BatchPolicy(max_batch=0, max_delay=0.0, queue_size=1)


class ShapeCheckingModel(RecordingModel):
    """Like a real runtime: one batch must hold one input shape (np.concatenate already refuses a mix)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.shapes.append(tuple(images.shape))
        return super().__call__(images)


def test_a_batch_holds_one_shape_and_every_request_of_a_mix_is_answered():
    model = ShapeCheckingModel()

    async def body(batcher):
        small = [batcher.submit(np.full((1, 1, 2, 2), i, np.float32)) for i in range(3)]
        large = [batcher.submit(np.full((1, 1, 3, 3), 10 + i, np.float32)) for i in range(3)]
        mixed = [item for pair in zip(small, large, strict=True) for item in pair]  # arrivals alternate
        return await asyncio.gather(*mixed)

    results = run(with_batcher(model, body))
    assert sorted(model.shapes) == [(3, 1, 2, 2), (3, 1, 3, 3)]  # two batches, not six and not one mixed
    values = [float(r.outputs[0, 0, 0, 0]) for r in results]
    assert values == [0.0, 20.0, 2.0, 22.0, 4.0, 24.0]
    assert [r.outputs.shape[2:] for r in results] == [(2, 2), (3, 3)] * 3


def test_a_request_set_aside_for_its_shape_goes_first_in_the_next_batch():
    model = ShapeCheckingModel()

    async def body(batcher):
        first = batcher.submit(stack(1.0))
        odd = batcher.submit(np.full((1, 1, 3, 3), 5.0, np.float32))
        rest = [batcher.submit(stack(2.0)) for _ in range(4)]  # fill the first shape's batches
        return await asyncio.gather(first, odd, *rest)

    results = run(with_batcher(model, body))
    assert model.shapes[0] == (4, 1, 2, 2) and model.shapes[1] == (1, 1, 3, 3)  # the odd one is next, not last
    assert float(results[1].outputs[0, 0, 0, 0]) == 10.0


def test_a_request_larger_than_max_batch_runs_alone_in_chunks():
    model = RecordingModel()

    async def body(batcher):
        return await batcher.submit(np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1), exclusive=True)

    result = run(with_batcher(model, body))
    assert model.sizes == [4, 4, 2]
    assert result.outputs.ravel().tolist() == [2.0 * i for i in range(10)] and result.batch_size == 10


def test_requests_set_aside_count_against_the_queue_bound():
    model = RecordingModel(gated=True)

    async def body(batcher):
        running = asyncio.ensure_future(batcher.submit(stack(0.0)))
        await until(lambda: model.entered == 1)  # the first batch is running; the rest wait
        waiting = [asyncio.ensure_future(batcher.submit(np.full((1, 1, 2 + i % 2, 2), 1.0, np.float32)))
                   for i in range(3)]
        await until(lambda: batcher.depth == 3)
        with pytest.raises(QueueFullError):
            await batcher.submit(stack(9.0))
        model.gate.set()
        return await asyncio.gather(running, *waiting)

    results = run(with_batcher(model, body, queue_size=3))
    assert len(results) == 4


def test_each_batch_reports_its_outcome_and_a_long_one_is_reported_hung_but_still_answered():
    outcomes, hangs = [], []
    slow = RecordingModel(gated=True)

    async def body(batcher):
        answer = asyncio.ensure_future(batcher.submit(stack(1.0)))
        await until(lambda: hangs)  # reported while the batch is still held
        slow.gate.set()
        return await answer

    result = run(with_batcher(slow, body, hang_timeout=0.1, on_outcome=outcomes.append, on_hang=hangs.append))
    assert hangs == [0.1] and outcomes == [None] and float(result.outputs[0, 0, 0, 0]) == 2.0

    failing = RecordingModel(fail=True)

    async def failing_body(batcher):
        with pytest.raises(RuntimeError, match="runtime exploded"):
            await batcher.submit(stack(1.0))

    outcomes.clear()
    run(with_batcher(failing, failing_body, on_outcome=outcomes.append))
    assert len(outcomes) == 1 and isinstance(outcomes[0], RuntimeError)


class RowTaggingModel(RecordingModel):
    """Each output row is its input row times two plus a tag that says which call produced it, so a padded row
    leaking into an answer, or a row landing in the wrong request, would show."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = super().__call__(images)
        return out + 1000 * len(self.sizes)


def test_batches_are_padded_to_the_smallest_bucket_and_padding_never_reaches_an_answer():
    model = RowTaggingModel()

    async def body(batcher):
        three = await asyncio.gather(*(batcher.submit(stack(i + 1)) for i in range(3)))
        alone = await batcher.submit(stack(7))
        seven = await batcher.submit(np.arange(1, 8, dtype=np.float32).reshape(7, 1, 1, 1), exclusive=True)
        return three, alone, seven

    three, alone, seven = run(with_batcher(model, body, buckets=(1, 2, 4)))
    assert model.sizes == [4, 1, 4, 4]  # 3 -> 4, 1 -> 1, 7 -> 4 + 3 padded to 4
    assert [r.outputs.shape[0] for r in three] == [1, 1, 1] and [r.batch_size for r in three] == [3, 3, 3]
    assert [float(r.outputs[0, 0, 0, 0]) for r in three] == [1002.0, 1004.0, 1006.0]
    assert float(alone.outputs[0, 0, 0, 0]) == 2014.0
    assert seven.outputs.ravel().tolist() == [3002.0, 3004.0, 3006.0, 3008.0, 4010.0, 4012.0, 4014.0]


def test_a_padded_batch_joins_stacks_of_several_requests_in_one_buffer_with_zero_rows():
    batches: list[np.ndarray] = []

    def model(images: np.ndarray) -> np.ndarray:
        batches.append(images.copy())
        return images

    async def body(batcher):
        return await asyncio.gather(batcher.submit(stack(1, n=2)), batcher.submit(stack(2, n=3)))

    results = run(with_batcher(model, body, max_batch=8, buckets=(2, 8)))
    assert [b.shape[0] for b in batches] == [8]
    assert batches[0][:, 0, 0, 0].tolist() == [1, 1, 2, 2, 2, 0, 0, 0]
    assert [r.outputs[:, 0, 0, 0].tolist() for r in results] == [[1, 1], [2, 2, 2]]


def test_buckets_must_end_at_max_batch():
    with pytest.raises(ValueError, match=r"batch buckets \[1, 2\] must be >= 1 and end at max_batch=4"):
        BatchPolicy(max_batch=4, max_delay=0.0, queue_size=1, buckets=(1, 2))


def test_without_a_delay_an_idle_model_runs_a_lone_request_and_batches_form_while_it_is_busy():
    model = RecordingModel(gated=True)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(stack(0)))
        await until(lambda: model.entered == 1)  # the lone request runs without company; these three queue behind it
        rest = [asyncio.ensure_future(batcher.submit(stack(i))) for i in (1, 2, 3)]
        await until(lambda: batcher.depth == 3)
        model.gate.set()
        return await asyncio.gather(first, *rest)

    results = run(with_batcher(model, body, max_delay=0.0))
    assert model.sizes == [1, 3]
    assert [r.batch_size for r in results] == [1, 3, 3, 3]


def test_stacks_prepared_on_a_device_batch_with_host_stacks_as_one_torch_batch():
    """A JPEG decoded on the device arrives as a torch tensor, a PNG decoded on the host as a NumPy stack: one
    batch holds both, as torch tensors on the device (the CPU here), padded like any other."""
    import torch

    kinds: list[str] = []

    def model(images) -> np.ndarray:
        kinds.append(type(images).__module__.split(".")[0])
        return images.numpy() * 2

    async def body(batcher):
        return await asyncio.gather(batcher.submit(torch.full((1, 1, 2, 2), 3.0)), batcher.submit(stack(5)))

    results = run(with_batcher(model, body, buckets=(1, 4)))
    assert kinds == ["torch"]
    assert [float(r.outputs[0, 0, 0, 0]) for r in results] == [6.0, 10.0]
