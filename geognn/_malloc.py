"""Keep freed memory in the process (glibc): what the ``geognn`` command and the calculator set.

PyTorch on CPU allocates its large autograd buffers with malloc. glibc serves
blocks above a threshold with fresh mmap'd pages and returns freed memory at the
top of the heap to the system, so every step of a training or MD loop page-faults
its buffers in again; on a 10,000-atom periodic MD step that doubled the cost
(`benchmarks/README.md`). Raising the mmap and trim thresholds keeps freed memory
for the next step: every block comes from the heap (no mmap, so buffers above
glibc's largest mmap threshold, 32 MiB, are kept too) and up to 1 GiB of freed
memory stays at its top.

Only on Linux with glibc, only once, and not when the user set ``MALLOC_*``
variables or ``GEOGNN_MALLOC=0``. The cost: the process keeps up to
``TRIM_THRESHOLD`` of freed memory instead of returning it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (64-bit): every block below it comes from the heap
MMAP_MAX = 0  # and none above it either: a 10k-atom step's buffers are hundreds of MB
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of freed memory at the top of the heap
TOP_PAD = 256 * 2**20  # grow the heap in 256 MiB steps

_state = {"done": False, "applied": False}


def keep_freed_memory() -> bool:
    """Apply the thresholds above (once); returns whether they are in effect."""
    if _state["done"]:
        return _state["applied"]
    _state["done"] = True
    if os.environ.get("GEOGNN_MALLOC", "1") == "0" or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_MMAP_MAX, MMAP_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (M_TOP_PAD, TOP_PAD))
    _state["applied"] = all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
    return _state["applied"]
