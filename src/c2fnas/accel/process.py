"""Process-wide settings for fast CPU training: for command-line entry points and benchmarks to
call, never for library functions to change behind their caller's back."""

from __future__ import annotations

import ctypes
import logging
from functools import cache

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


@cache
def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of handing it back.

    Every training step frees and allocates the same large activation buffers. By default glibc
    gives such blocks back to the kernel (unmapping them or trimming the heap), so the next step
    faults them in again, page by page and zero-filled. On the 2-core development CPU that made
    bf16 steps of C2FNAS-Panc and DynUNet up to 1.5x slower and their times vary by +-30%.
    The process keeps its peak memory instead, which a training process reaches every step
    anyway. Returns False, changing nothing, where the C library has no ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = all(
        mallopt(parameter, value)
        for parameter, value in (
            (_M_MMAP_THRESHOLD, 32 * 2**20),  # glibc's largest: bigger blocks are still mapped
            (_M_TRIM_THRESHOLD, 2**31 - 1),
            (_M_TOP_PAD, 64 * 2**20),
        )
    )
    log.debug("glibc allocator keeps freed memory: %s", done)
    return done
