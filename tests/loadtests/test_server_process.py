"""ServerProcess: a server that cannot start fails fast, with the end of its log in the error."""

from pathlib import Path

import pytest

from loadtests.processes import ServerProcess


def start_and_fail(server: ServerProcess) -> str:
    """Start a server that must exit; the error message it raised."""
    with pytest.raises(RuntimeError) as raised:
        server.start(timeout=60)
    assert server.process is None  # stopped and reaped
    return str(raised.value)


def test_a_server_that_exits_raises_with_its_own_error_line(tmp_path: Path) -> None:
    message = start_and_fail(ServerProcess(tmp_path / "missing", log_path=tmp_path / "server.log"))
    assert "exited with code 2 before it was ready" in message
    assert "model store folder not found" in message and "Traceback" not in message


def test_server_variables_reach_the_server_unless_dropped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SERVER_MAX_BATCH", "abc")
    inherited = start_and_fail(ServerProcess(tmp_path / "missing", log_path=tmp_path / "inherit.log"))
    assert "SERVER_MAX_BATCH='abc' is not a valid int" in inherited
    dropped = start_and_fail(ServerProcess(tmp_path / "missing", log_path=tmp_path / "drop.log",
                                           inherit_server_env=False))
    assert "SERVER_MAX_BATCH" not in dropped and "model store folder not found" in dropped
