"""``c2fnas preprocess``: fingerprint, plan and cache a whole dataset into a run folder.

Resumable: per-case fingerprints and cached cases whose source files (size, mtime) and plan are
unchanged are kept; damaged cache files are redone. One failing case does not stop the others;
the failures are raised together at the end, after everything else is written.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2fnas.data import cache
from c2fnas.data.fingerprint import SAMPLES_TOTAL, case_fingerprint, make_plan, stamps, summarize
from c2fnas.data.msd import Case, case_id_of, read_dataset
from c2fnas.data.preprocess import Plan

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, stage ``"fingerprint"`` or ``"preprocess"``."""


class PreprocessError(RuntimeError):
    """Some cases failed; the others are written. The message lists each failure."""


@dataclass
class PreprocessSummary:
    plan: Plan
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


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


def _failure(case_id: str, error: BaseException) -> str:
    return f"{case_id}: {error}"


def fingerprint_dataset(
    cases: Sequence[Case], run_dir: Path, workers: int, progress: Progress | None
) -> tuple[dict[str, Any], list[str]]:
    """Per-case fingerprints (reusing unchanged ones from ``fingerprint.json``) and failures."""
    path = run_dir / "fingerprint.json"
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text()).get("cases", {})
        except (OSError, ValueError, AttributeError):
            log.warning("%s: unreadable, recomputing the fingerprint", path)
    samples = max(50, SAMPLES_TOTAL // max(1, len(cases)))
    entries: dict[str, Any] = {}
    jobs = []
    for case in cases:
        entry = previous.get(case.case_id)
        if isinstance(entry, dict) and entry.get("stamps") == stamps(case):
            entries[case.case_id] = entry
        else:
            jobs.append((case.case_id, (case, samples)))
    failures = []
    for case_id, entry, error in run_parallel(
        case_fingerprint, jobs, workers, "fingerprint", progress
    ):
        if error is None:
            entries[case_id] = entry
        else:
            failures.append(_failure(case_id, error))
    ordered = {case.case_id: entries[case.case_id] for case in cases if case.case_id in entries}
    return ordered, failures


def preprocess_dataset(
    dataset_dir: str | Path,
    run_dir: str | Path,
    spacing: Sequence[float] | str | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> PreprocessSummary:
    """Fingerprint, plan and cache every training case of an MSD dataset into ``run_dir``.

    Writes ``dataset.json`` (with ``source``), ``fingerprint.json``, ``plan.json`` and
    ``preprocessed/<case>.npz|json`` (see ``c2fnas.data.cache``).

    Args:
        spacing: ``None`` (1.0 mm isotropic), ``"auto"`` (median) or three numbers in mm.
        workers: worker processes.
        progress: called as cases finish.

    Raises:
        DatasetError: ``dataset.json`` or a listed path is unusable.
        PreprocessError: after all other cases are written, listing the failed ones.
    """
    start = time.perf_counter()
    dataset = read_dataset(dataset_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    description = json.loads((dataset.root / "dataset.json").read_text())
    description["source"] = str(dataset.root)
    cache.write_json_atomic(run_dir / "dataset.json", description)

    entries, failures = fingerprint_dataset(dataset.training, run_dir, workers, progress)
    if not entries:
        raise PreprocessError("no case could be read: " + "; ".join(failures))
    fingerprint = summarize(entries, len(dataset.modalities))
    fingerprint["cases"] = entries
    cache.write_json_atomic(run_dir / "fingerprint.json", fingerprint)
    plan = make_plan(dataset, fingerprint, spacing)
    plan.save(run_dir)

    summary = PreprocessSummary(plan=plan)
    for stale in (run_dir / cache.CACHE_DIR).glob(".*.tmp*"):  # left by a killed run
        stale.unlink(missing_ok=True)
    digest = plan.digest()
    todo = []
    for case in dataset.training:
        if case.case_id not in entries:
            continue
        if cache.is_current(run_dir, case, digest):
            summary.skipped.append(case.case_id)
        else:
            todo.append((case.case_id, (case, plan, run_dir)))
    for case_id, _, error in run_parallel(
        cache.preprocess_case, todo, workers, "preprocess", progress
    ):
        if error is None:
            summary.written.append(case_id)
        else:
            failures.append(_failure(case_id, error))
    summary.seconds = time.perf_counter() - start
    log.info(
        "preprocessed %d case(s), %d unchanged, %d failed in %.1f s",
        len(summary.written),
        len(summary.skipped),
        len(failures),
        summary.seconds,
    )
    if failures:
        raise PreprocessError(f"{len(failures)} case(s) failed: " + "; ".join(failures))
    return summary


def cached_case_ids(run_dir: str | Path) -> list[str]:
    """Case ids of the run's dataset, in dataset order (from ``RUN_DIR/dataset.json``)."""
    path = Path(run_dir) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `c2fnas preprocess` first")
    return [case_id_of(entry["image"]) for entry in json.loads(path.read_text())["training"]]


def parse_spacing(values: Sequence[str]) -> tuple[float, float, float] | str | None:
    """``[]`` -> None (1.0 mm), ``["auto"]``, ``["1.5"]`` (isotropic), ``["0.8", "0.8", "2.5"]``
    or ``["0.8,0.8,2.5"]`` -> three numbers. Raises ``ValueError`` with the accepted forms."""
    tokens = [part for value in values for part in value.replace(",", " ").split()]
    if not tokens:
        return None
    if tokens == ["auto"]:
        return "auto"
    try:
        numbers = [float(token) for token in tokens]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3 or not all(0 < n < float("inf") for n in numbers):
        raise ValueError(
            f"--spacing {' '.join(values)}: give 'auto', one number or three positive numbers (mm)"
        )
    return numbers[0], numbers[1], numbers[2]
