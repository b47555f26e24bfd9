"""Process-wide settings for fast CPU training: for command-line entry points and benchmarks to
call, never for library functions to change behind their caller's back."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a batch job's
    share), not every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def wait_passively() -> bool:
    """Make OpenMP's threads sleep at once when they wait, instead of spinning first.

    After every parallel operation PyTorch's threads meet at a barrier. By default a thread that
    arrives early spins for a while, which is fastest on a machine of one's own; beside another
    CPU job the spinning threads take the cores that the late ones need, and a step can become
    10x slower (``benchmarks/shared_cpu.py`` measures both cases). This sets
    ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already chooses a policy, and only
    before the OpenMP runtime has loaded (with torch): returns whether the setting takes effect.
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when the environment (or ``c2fnas --threads``) sets it, otherwise
    ``usable_cores()``."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else usable_cores()


def use_threads(threads: int | None = None) -> int:
    """Compute with ``threads`` intra-op threads: by default ``OMP_NUM_THREADS`` when the
    environment sets it, otherwise ``usable_cores()``. Before torch loads this sets
    ``OMP_NUM_THREADS``, which torch and OpenMP read when they load (and processes started from
    this one inherit); after, it calls ``torch.set_num_threads``. Returns the number."""
    threads = threads or default_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    log.debug("computing with %d thread(s)", threads)
    return threads
