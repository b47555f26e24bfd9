"""Process-wide settings for fast CPU training: for command-line entry points and benchmarks to
call, never for library functions to change behind their caller's back."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when the environment (or ``c2fnas --threads``) sets it, otherwise
    ``usable_cores()``."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else usable_cores()


def use_threads(threads: int | None = None) -> int:
    """Compute with ``threads`` intra-op threads, a fixed number (``ThreadGovernor`` then leaves
    it alone). It sets ``OMP_NUM_THREADS``, which torch and OpenMP read when they load (and
    processes started from this one inherit), and calls ``torch.set_num_threads`` when torch is
    loaded already. None changes nothing: OpenMP's default is the cores of the process's
    affinity. Returns ``default_threads()``."""
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        log.debug("computing with %d thread(s)", threads)
    return default_threads()


ADAPT = "C2FNAS_ADAPT_THREADS"


class ThreadGovernor:
    """Fits torch's threads to the cores that other jobs leave free, while training runs.

    PyTorch's threads meet at a barrier after every parallel operation, so one thread that
    shares its core with another job holds all of them back; a step beside one busy process
    took 3-4x as long with 2 threads on 2 cores, and 1.1x with one thread
    (``benchmarks/shared_cpu.py``). Making idle threads sleep at once (``OMP_WAIT_POLICY``
    passive) avoided that but made the step alone 1.5-2.5x slower. Instead, every ``every``
    seconds the governor reads how busy this process's cores were (``/proc/stat``, the CPUs of
    its affinity only) less its own CPU time, and uses the cores left: at most the threads it
    started with, at least one. Linux only; elsewhere ``tick`` does nothing.

    The commands that train start one (``start_governor``) and training ticks it before every
    step, unless the thread count was fixed (``OMP_NUM_THREADS``, ``c2fnas --threads``) or
    ``C2FNAS_ADAPT_THREADS=0``: results then stay bit-for-bit repeatable, which a change of
    thread count mid-run can alter in the last bits.
    """

    @staticmethod
    def wanted(device: torch.device) -> bool:
        """Whether training on ``device`` should run one (see above)."""
        fixed = "OMP_NUM_THREADS" in os.environ
        return device.type == "cpu" and not fixed and os.environ.get(ADAPT, "1") != "0"

    def __init__(
        self,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        busy_seconds: Callable[[], float | None] | None = None,
        own_seconds: Callable[[], float] = time.process_time,
    ) -> None:
        import torch

        self._torch = torch
        self.limit = torch.get_num_threads()
        self.threads = self.limit
        self.every = every
        self._clock, self._own = clock, own_seconds
        self._busy = busy_seconds or _busy_seconds_of_my_cores
        self._last = self._sample()

    def _sample(self) -> tuple[float, float | None, float]:
        return self._clock(), self._busy(), self._own()

    def tick(self) -> int | None:
        """Check the load when ``every`` seconds have passed; returns the new thread count
        when it changed, else None."""
        now = self._clock()
        if now - self._last[0] < self.every:
            return None
        sample = self._sample()
        (then, busy_then, own_then), self._last = self._last, sample
        if sample[1] is None or busy_then is None:
            return None
        others = ((sample[1] - busy_then) - (sample[2] - own_then)) / (sample[0] - then)
        threads = max(1, min(self.limit, self.limit - round(max(0.0, others))))
        if threads == self.threads:
            return None
        log.info("other jobs use %.1f core(s): computing with %d thread(s)", others, threads)
        self._torch.set_num_threads(threads)
        self.threads = threads
        return threads


def start_governor(device: torch.device | None = None) -> ThreadGovernor | None:
    """A ``ThreadGovernor`` for the training this process runs on ``device`` (default: CUDA
    when available, else the CPU), or None where none is ``wanted``. For entry points: library
    functions are handed one (``c2fnas.training.loop.fit``), never start one."""
    import torch  # here: this module loads without torch

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return ThreadGovernor() if ThreadGovernor.wanted(device) else None


def _busy_seconds_of_my_cores() -> float | None:
    """CPU seconds spent busy so far on the cores this process may use, by every process
    (``/proc/stat``'s per-CPU lines: all but idle and iowait); None where unreadable."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    ticks = 0
    for line in lines:
        name, *fields = line.split() or [""]
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cores is not None and int(name[3:]) not in cores:
            continue
        # user, nice, system, idle, iowait, irq, softirq, steal
        values = [int(value) for value in fields[:8]]
        ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK")
