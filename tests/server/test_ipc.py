"""server.ipc's per-thread clients, against a real Unix socket."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from server.ipc import ThreadClients


def test_a_dropped_client_is_closed_and_forgotten_and_the_next_call_opens_a_new_one(tmp_path: Path):
    """A front end whose connection to the inference process breaks again and again keeps one client per thread,
    not one per break."""
    address = str(tmp_path / "inference.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()[0]) for _ in range(6)], daemon=True).start()
    clients = ThreadClients(address, os.getpid())
    try:
        first = clients.get()
        assert clients.get() is first
        for _ in range(5):
            broken = clients.get()
            clients.drop()
            assert broken.sock.fileno() == -1  # closed
            assert clients.get() is not broken
        assert len(clients._all) == 1
    finally:
        clients.close()
        listener.close()
        for conn in accepted:
            conn.close()
    assert clients._all == []
