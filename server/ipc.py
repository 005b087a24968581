"""HTTP worker <-> inference process: framed JSON messages over a Unix socket, input tensors through shared memory.

Each client connection (one per inference thread of an HTTP worker) owns one shared-memory file in /dev/shm. It
writes its batch there and sends a small header; the inference process maps the file once and hands a view of it
to its batcher, so the tensor crosses the process boundary without being copied through the socket. Outputs,
which are small for classifiers, come back on the socket. A connection carries one request at a time.

Message framing: a 4-byte big-endian length, then that many bytes of JSON; an answer to ``infer`` that succeeded
is followed by ``nbytes`` raw output bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import mmap
import os
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from server.batching import DeadlineExceededError, QueueFullError
from server.images import ImageRejectedError

HEADER = struct.Struct(">I")
MAX_HEADER_BYTES = 1 << 20
SHM_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
SHM_PREFIX = "occlusion-serve-"
MIN_SEGMENT_BYTES = 16 << 20
_segments = itertools.count()


class RemoteError(RuntimeError):
    """The inference process could not run a batch; ``code`` says why (``failed``, ``unknown_model``, ...)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


ERRORS_BY_CODE = {"queue_full": QueueFullError, "deadline": DeadlineExceededError}


def pack(message: dict[str, Any]) -> bytes:
    """One framed JSON message."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = sock.recv_into(view[got:])
        if not count:
            raise ConnectionError("the inference process closed the connection")
        got += count
    return bytes(buffer) if size < 4096 else buffer


def recv_message(sock: socket.socket) -> dict[str, Any]:
    """One framed JSON message from a blocking socket."""
    (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if size > MAX_HEADER_BYTES:
        raise ConnectionError(f"a {size}-byte message header is larger than {MAX_HEADER_BYTES}")
    return json.loads(_recv_exactly(sock, size))


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One framed JSON message from an asyncio stream (IncompleteReadError at the end of the stream)."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_HEADER_BYTES:
        raise ConnectionError(f"a {size}-byte message header is larger than {MAX_HEADER_BYTES}")
    return json.loads(await reader.readexactly(size))


def segment_name(owner: int) -> str:
    """A new shared-memory file name for a client of the front end whose supervisor is ``owner``."""
    return f"{SHM_PREFIX}{owner}-{os.getpid()}-{next(_segments)}"


def remove_segments(owner: int) -> None:
    """Delete every shared-memory file left by the clients of front end ``owner`` (a worker that died)."""
    for path in SHM_DIR.glob(f"{SHM_PREFIX}{owner}-*"):
        path.unlink(missing_ok=True)


class SharedSegment:
    """A file in shared memory, mapped read-write, that grows (a new file) when a batch does not fit."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.path: Path | None = None
        self.map: mmap.mmap | None = None

    def write(self, array: np.ndarray) -> Path:
        """Copy ``array`` to the start of the segment; the file's path."""
        if self.map is None or array.nbytes > len(self.map):
            self.close()
            size = max(MIN_SEGMENT_BYTES, 1 << (array.nbytes - 1).bit_length())
            self.path = SHM_DIR / segment_name(self.owner)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, size)
                self.map = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        np.ndarray(array.shape, array.dtype, buffer=self.map)[...] = array
        return self.path

    def close(self) -> None:
        """Unmap and delete the file (a reader that mapped it keeps its mapping until it lets go)."""
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


class InferenceClient:
    """One blocking connection to the inference process, with its shared-memory segment (one per thread)."""

    def __init__(self, address: str, owner: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)
        self.segment = SharedSegment(owner)

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a message and read its answer."""
        self.sock.sendall(pack(message))
        return recv_message(self.sock)

    def _outputs(self, answer: dict[str, Any]) -> np.ndarray:
        """The output tensor that follows a successful answer; an error answer raised as its exception."""
        if "error" in answer:
            error = ERRORS_BY_CODE.get(answer["error"])
            raise error(answer["detail"]) if error else RemoteError(answer["error"], answer["detail"])
        outputs = np.frombuffer(_recv_exactly(self.sock, answer["nbytes"]), dtype=answer["dtype"])
        return outputs.reshape(answer["shape"])

    def infer(self, model: str, precision: str, images: np.ndarray, deadline_in: float,
              exclusive: bool = False) -> np.ndarray:
        """Run an (n, C, H, W) float32 batch on the inference process; its outputs."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        path = self.segment.write(images)
        return self._outputs(self.call({"op": "infer", "model": model, "precision": precision, "shm": path.name,
                                        "shape": list(images.shape), "deadline_in": deadline_in,
                                        "exclusive": exclusive}))

    def infer_encoded(self, model: str, precision: str, uploads: list[bytes],
                      deadline_in: float) -> np.ndarray:
        """Have the inference process decode JPEG uploads on its device and run them: per upload its output row,
        or the error that refused it (a 1-d object array)."""
        path = self.segment.write(np.frombuffer(b"".join(uploads), dtype=np.uint8))
        answer = self.call({"op": "infer_encoded", "model": model, "precision": precision, "shm": path.name,
                            "sizes": [len(data) for data in uploads], "deadline_in": deadline_in})
        kept = iter(self._outputs(answer))
        rows = np.empty(len(uploads), dtype=object)
        for index in range(len(uploads)):
            refused = answer["rejected"].get(str(index))
            rows[index] = ImageRejectedError(400, "invalid_image", refused) if refused else next(kept)
        return rows

    def close(self) -> None:
        """Close the connection and delete the segment."""
        self.sock.close()
        self.segment.close()


class ThreadClients:
    """One InferenceClient per calling thread, opened on first use; a broken one is replaced at the next call."""

    def __init__(self, address: str, owner: int) -> None:
        self.address, self.owner = address, owner
        self._local = threading.local()
        self._all: list[InferenceClient] = []
        self._lock = threading.Lock()

    def get(self) -> InferenceClient:
        """This thread's client."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = InferenceClient(self.address, self.owner)
            with self._lock:
                self._all.append(client)
        return client

    def drop(self) -> None:
        """Forget this thread's client after a broken connection."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None
            with self._lock:
                if client in self._all:  # close() may have emptied it meanwhile
                    self._all.remove(client)

    def close(self) -> None:
        """Close every client."""
        with self._lock:
            for client in self._all:
                client.close()
            self._all.clear()


def attach(name: str, cache: dict[str, mmap.mmap]) -> mmap.mmap:
    """The mapping of a client's segment file (mapped once per connection; an older one is let go)."""
    found = cache.get(name)
    if found is not None:
        return found
    if "/" in name or not name.startswith(SHM_PREFIX):
        raise ValueError(f"{name!r} is not a segment of this server")
    for old in cache.values():
        with contextlib.suppress(BufferError):  # a view still held: the mapping closes when it is collected
            old.close()
    cache.clear()
    fd = os.open(SHM_DIR / name, os.O_RDONLY)
    try:
        cache[name] = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return cache[name]
