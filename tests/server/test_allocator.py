"""The server caps glibc's malloc arenas and fixes its mmap threshold, unless the environment already decides;
with the threshold fixed, a big block freed after an even bigger one goes back to the system."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CONFIGURE = "import json; from server.allocator import configure_malloc; print(json.dumps(configure_malloc()))"
# 20 MB mapped and freed (glibc then raises its threshold to 20 MB), then 8 MB touched and freed: the VmRSS
# growth in MB that the 8 MB block leaves behind.
LEFT_BEHIND = """
import ctypes, sys
from server.allocator import configure_malloc
if sys.argv[1] == "configured":
    configure_malloc()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
big = libc.malloc(20 << 20); ctypes.memset(big, 1, 20 << 20); libc.free(big)
before = rss()
block = libc.malloc(8 << 20); ctypes.memset(block, 1, 8 << 20); libc.free(block)
print(round(rss() - before))
"""


def run(code: str, *args: str, **env_values: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env_values
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_both_settings_apply_on_glibc_and_the_environment_wins():
    assert json.loads(run(CONFIGURE)) == {"arenas": True, "mmap_threshold": True}  # this machine runs glibc
    assert json.loads(run(CONFIGURE, MALLOC_ARENA_MAX="4")) == {"arenas": False, "mmap_threshold": True}
    assert json.loads(run(CONFIGURE, MALLOC_MMAP_THRESHOLD_="1048576")) == {"arenas": True,
                                                                           "mmap_threshold": False}


def test_a_freed_big_block_goes_back_to_the_system_once_the_threshold_is_fixed():
    assert int(run(LEFT_BEHIND, "default")) >= 7  # glibc's moving threshold kept it in the heap
    assert int(run(LEFT_BEHIND, "configured")) <= 1
