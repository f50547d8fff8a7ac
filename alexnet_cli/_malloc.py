"""Let the process reuse its large buffers instead of asking the kernel for fresh pages at every step.

glibc's malloc serves every block over 32 MB (and, on a worker thread's arena, over its 64 MB heap) with a
new mmap, and returns it with munmap when freed. AlexNet's large activations (paper's conv1/norm1 output is
37 MB at batch 32) and XLA's per-step temporary buffer (57-119 MB) are such blocks, so each step the kernel
zero-fills every page of them again on first touch: ~29,000 page faults per step for Flax's `paper`,
~25,000 for torch.compile's. On the development VM that was 15% of Flax's step and most of what LRN
cost there (benchmarks/RESULTS.md). Serving all threads from the main heap, with no mmap and no trimming,
keeps those pages for the next step; the cost is that freed memory stays with the process until it ends,
which for a command that builds a model and runs it is its working set anyway. This is what the PyTorch
CPU performance guide gets from jemalloc/tcmalloc, with the allocator already loaded.

Library users get the same with GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=
1073741824:glibc.malloc.trim_threshold=1073741824 in the environment.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "ALEXNET_MALLOC"  # "system" leaves malloc as it is
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # <malloc.h>
KEEP_BYTES = 1 << 30


def keep_large_buffers() -> str:
    """Apply the setting above where the C library is glibc; return what the process now runs with.
    Call before any framework starts its threads: arenas are chosen when a thread first allocates."""
    if os.environ.get(ENV, "").lower() == "system":
        return f"system malloc ({ENV}=system)"
    if not sys.platform.startswith("linux"):
        return "system malloc"
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return "system malloc (not glibc)"
    applied = (libc.mallopt(M_ARENA_MAX, 1) and libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)
               and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    return "glibc malloc keeping large buffers" if applied else "system malloc (glibc refused mallopt)"
