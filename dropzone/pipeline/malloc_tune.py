"""A fixed mmap threshold for glibc's allocator, so large resources give their memory back.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start) with their own mapping,
returned to the system on free, but it raises that threshold each time such a block is freed
(up to 32 MiB on 64-bit). After the first few multi-megabyte resources (a PDF attachment in a
DocumentReference), later ones come from the heap, which fragments and stays resident.
Measured on a 189 MiB NDJSON of 2 MB resources (tests/test_streaming.py's file): peak RSS grew
185 MiB with the dynamic threshold and 72 MiB with it fixed at 1 MiB, before the batch-size
change that brought it under the test's bound. Setting any of these parameters switches the
dynamic adjustment off. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold() -> bool:
    """True when the threshold was set."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
