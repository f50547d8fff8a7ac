"""alexnet_cli._malloc: the `alexnet` process keeps its large buffers (no fresh zero-filled pages per step)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# In a fresh process: a worker thread mallocs 96 MB, touches every page, frees it, and does it again; the
# second round's page faults say whether the freed pages were kept (0) or handed back to the kernel (~24,000).
PROBE = r"""
import ctypes, resource, sys, threading
from alexnet_parity.alexnet_cli._malloc import keep_large_buffers
print(keep_large_buffers())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 96 << 20
faults = []
def step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
for _ in range(2):
    t = threading.Thread(target=step); t.start(); t.join()
print(faults[1])
"""


def probe(**env):
    inherited = {k: v for k, v in os.environ.items() if k != "ALEXNET_MALLOC"}  # the test session sets it (conftest)
    out = subprocess.run([sys.executable, "-c", PROBE], env={**inherited, **env}, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_large_buffers_are_kept_for_the_next_step():
    setting, faults = probe()
    assert setting == "glibc malloc keeping large buffers"
    assert faults < 100  # pages of the freed 96 MB reused
    setting, faults = probe(ALEXNET_MALLOC="system")
    assert setting == "system malloc (ALEXNET_MALLOC=system)"
    assert faults > 10_000  # glibc's own policy: munmap on free, fresh zero pages on the next malloc


def test_the_command_line_applies_it(monkeypatch):
    from alexnet_parity.alexnet_cli import main as cli

    seen = []
    monkeypatch.setattr(cli, "keep_large_buffers", lambda: seen.append("malloc") or "kept")
    assert cli.main(["summary", "paper", "--json"]) == 0
    assert seen == ["malloc"]
