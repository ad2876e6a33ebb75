"""glibc's malloc, told to keep the memory that uploads churn through.

An upload arrives as a stream of 64-256 KiB ``bytes`` objects (one per socket read, one
more per piece the HTTP parser hands on) that live until their batch is on disk. With
glibc's defaults, whether such a buffer comes from fresh pages depends on the process's
history: the mmap threshold starts at 128 KiB and only rises when a larger mapped chunk
is freed, and free memory at the top of the heap goes back to the kernel past a
threshold that moves with it. Every fresh page is a page fault, and the PUT path's speed
then depends on how dear a fault is on the machine. Fixed thresholds keep the buffers in
the heap; the measurements are in docs/performance.md ("The upload benchmark on another
machine").
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Buffers below this come from the heap, however the process got here (uvloop reads at
# most 256 KiB at a time; a write batch is a list of them, never one big block).
MMAP_THRESHOLD_BYTES = 1024 * 1024
# Free memory kept at the top of the heap before any goes back to the kernel: a few
# write batches' worth.
TRIM_THRESHOLD_BYTES = 8 * 1024 * 1024
# An operator's own settings (glibc reads these at start) win over ours.
_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_buffers() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False where it does not
    apply (another C library, or thresholds the operator set)."""
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not applied:
        log.warning("the C library refused dockyard's malloc thresholds; uploads may be slower")
    return applied
