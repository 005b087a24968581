"""Run an iterator in a background thread, a bounded number of items ahead of the loop that consumes it.

The evaluation perturbs the next inputs (numpy, OpenCV and scipy release the GIL for their work) while ONNX
Runtime runs the current batch. Items arrive in the iterator's own order, so whatever the consumer computes is
the same as when it iterates inline; an exception raised by the iterator is raised in the consumer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.1


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetched(Generic[T]):
    """``with Prefetched(items, depth) as ahead: for item in ahead: ...``; ``depth`` 0 iterates inline.

    Leaving the ``with`` block early (an exception, a cancelled run) stops the thread after its current item.
    """

    def __init__(self, items: Iterable[T], depth: int) -> None:
        self.items, self.depth = items, depth
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Iterator[T]:
        if self.depth <= 0:
            return iter(self.items)
        self._thread = threading.Thread(target=self._produce, name="evaluation-prefetch", daemon=True)
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                with contextlib.suppress(queue.Empty):  # unblock a producer waiting for room
                    self._queue.get(timeout=_POLL_S)
            self._thread.join()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Raised(error))
            return
        self._put(_END)

    def _consume(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
