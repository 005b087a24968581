"""The server caps glibc's malloc arenas unless the environment already sets MALLOC_ARENA_MAX."""

from __future__ import annotations

import os
import subprocess
import sys

CALL = "from server.allocator import limit_malloc_arenas; print(limit_malloc_arenas())"


def run_with(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if env_value is not None:
        env["MALLOC_ARENA_MAX"] = env_value
    return subprocess.run([sys.executable, "-c", CALL], env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_arenas_are_capped_on_glibc_and_the_environment_wins():
    assert run_with(None) == "True"  # this machine's Python runs on glibc
    assert run_with("4") == "False"
