"""Running one function per case, in this process or in worker processes, with progress.

``data check`` and ``preprocess`` share it: each case's failure is reported with its key and never
stops the other cases.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, stage e.g. ``"check"``, ``"fingerprint"``, ``"preprocess"``."""


def run_parallel(
    function: Callable[..., Any],
    jobs: Sequence[tuple[str, tuple[Any, ...]]],
    workers: int,
    stage: str,
    progress: Progress | None,
) -> Iterator[tuple[str, Any, BaseException | None]]:
    """Run ``function(*args)`` per ``(key, args)``; yields ``(key, result, error)`` as they end.

    ``workers <= 1`` runs in this process. Workers are forked where the platform allows: they
    need no ``if __name__ == "__main__"`` guard in the calling script and start at once; they
    only run numpy, scipy and nibabel code, never torch, so threads of the parent do not matter.
    """
    total = len(jobs)
    if progress:
        progress(stage, 0, total)
    if workers <= 1 or total <= 1:
        for done, (key, args) in enumerate(jobs, 1):
            try:
                result = function(*args)
            except Exception as error:  # reported per case, never hides the others
                yield key, None, error
            else:
                yield key, result, None
            if progress:
                progress(stage, done, total)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=context) as pool:
        futures: dict[Future[Any], str] = {pool.submit(function, *args): key for key, args in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            failure = future.exception()
            yield futures[future], None if failure else future.result(), failure
            if progress:
                progress(stage, done, total)
