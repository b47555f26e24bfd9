"""``c2fnas preprocess``: check, fingerprint, plan and cache a whole dataset into a run folder;
``verify_cache``: the check training makes of that cache before it starts.

Resumable: per-case fingerprints and cached cases whose source files (size, mtime) and plan are
unchanged are kept; damaged cache files are redone. One failing case (a problem ``data check``
reports, or one that cannot be written) does not stop the others and never enters the dataset's
statistics; the failures are raised together at the end, after everything else is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2fnas.data import cache
from c2fnas.data.fingerprint import (
    SAMPLES_TOTAL,
    case_fingerprint,
    checked_against,
    make_plan,
    stamps,
    summarize,
)
from c2fnas.data.msd import Dataset, entry_case_id, read_dataset, read_description
from c2fnas.data.parallel import Progress, run_parallel
from c2fnas.data.preprocess import Plan
from c2fnas.files.atomic import check_writable, remove_leftovers, write_json_atomic
from c2fnas.files.run_folder import RunFolder

log = logging.getLogger(__name__)


class PreprocessError(RuntimeError):
    """Some cases failed; the others are written. The message lists each failure."""


@dataclass
class PreprocessSummary:
    plan: Plan
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _failure(case_id: str, error: BaseException) -> str:
    return f"{case_id}: {error}"


def fingerprint_dataset(
    dataset: Dataset, run_dir: Path, workers: int, progress: Progress | None
) -> tuple[dict[str, Any], list[str]]:
    """Per-case fingerprints of the cases that pass the checks, and the failures.

    Entries of ``fingerprint.json`` are reused while the case's files and the modalities and
    labels of ``dataset.json`` they were checked against are unchanged.
    """
    path = RunFolder(run_dir).fingerprint
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text()).get("cases", {})
        except (OSError, ValueError, AttributeError):
            log.warning("%s: unreadable, recomputing the fingerprint", path)
    cases = dataset.training
    samples = max(50, SAMPLES_TOTAL // max(1, len(cases)))
    modalities, labels = len(dataset.modalities), set(dataset.labels)
    checked = checked_against(modalities, labels)
    entries: dict[str, Any] = {}
    jobs = []
    for case in cases:
        entry = previous.get(case.case_id)
        if (
            isinstance(entry, dict)
            and entry.get("stamps") == stamps(case)
            and entry.get("checked") == checked
        ):
            entries[case.case_id] = entry
        else:
            jobs.append((case.case_id, (case, samples, modalities, labels)))
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
    """Check, fingerprint, plan and cache every training case of a dataset (MSD or nnU-Net v2)
    into ``run_dir``.

    Each case must pass the checks of ``c2fnas data check`` (``check.read_checked_case``); a case
    that fails is left out of the statistics and the cache and named in the error at the end.
    ``plan.json`` and ``dataset.json`` (with ``source``) are written last, and only when some
    case of the cache was made with the new plan, so a run that cannot write its cases leaves
    them describing the cache that is there. Also writes ``fingerprint.json`` and
    ``preprocessed/<case>.npz|json`` (see ``c2fnas.data.cache``).

    Args:
        spacing: ``None`` (1.0 mm isotropic), ``"auto"`` (median) or three numbers in mm.
        workers: worker processes.
        progress: called as cases finish.

    Raises:
        DatasetError: ``dataset.json`` or a listed path is unusable, or it lists no training case.
        OSError: ``run_dir`` cannot be written (found before any case is read).
        PreprocessError: after all other cases are written, listing the failed ones.
    """
    start = time.perf_counter()
    dataset = read_dataset(dataset_dir)
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    check_writable(run_dir)
    check_writable(folder.cache)
    remove_leftovers(folder.cache)

    entries, failures = fingerprint_dataset(dataset, run_dir, workers, progress)
    if not entries:
        raise PreprocessError(
            f"none of the {len(dataset.training)} training case(s) passed the checks: "
            + "; ".join(failures)
        )
    fingerprint = summarize(entries, len(dataset.modalities))
    fingerprint["cases"] = entries
    write_json_atomic(folder.fingerprint, fingerprint)
    plan = make_plan(dataset, fingerprint, spacing)

    summary = PreprocessSummary(plan=plan)
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
    if summary.written or summary.skipped:
        description = read_description(dataset.root)  # nnU-Net v2: in its MSD form
        description["source"] = str(dataset.root)
        write_json_atomic(folder.dataset_copy, description)
        plan.save(run_dir)
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


def preprocess_command(run_dir: str | Path, plan: Plan) -> str:
    """The ``c2fnas preprocess`` command that rebuilds the cache of ``run_dir`` with ``plan``."""
    run_dir = Path(run_dir)
    source = "DATASET"  # a placeholder when the run folder does not name its dataset
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        source = str(json.loads(RunFolder(run_dir).dataset_copy.read_text())["source"])
    spacing = " ".join(f"{value:g}" for value in plan.spacing)
    return f"c2fnas preprocess {source} --run {run_dir} --spacing {spacing}"


def _plan_difference(properties: dict[str, Any], plan: Plan) -> str:
    """What differs between the plan a case was cached with and ``plan``, in words."""
    current = plan.model_dump(mode="json")
    cached = properties.get("plan")
    if not isinstance(cached, dict):  # cached before the plan was recorded: spacing only
        cached = {"spacing": properties.get("spacing")}
    differences = []
    for key, value in current.items():
        if key in cached and key != "dataset" and cached[key] != value:
            if key == "spacing":
                old, new = (" x ".join(f"{v:g}" for v in s or []) for s in (cached[key], value))
                differences.append(f"spacing {old} mm, plan.json has {new} mm")
            else:
                differences.append(
                    f"{key} {json.dumps(cached[key])}, plan.json has {json.dumps(value)}"
                )
    return "; ".join(differences) or f"another plan (digest {properties.get('plan_digest')})"


def verify_cache(run_dir: str | Path, case_ids: Sequence[str], plan: Plan) -> None:
    """Check, before training, that each case is cached, intact, its own and made with ``plan``.

    Reads each ``.npz`` once (``cache.verified_properties``): a damaged or swapped file is found
    now, not at the first validation.

    Raises:
        CacheError: naming each bad file and what is wrong, and the command that fixes it.
    """
    digest, declared = plan.digest(), set(plan.labels)
    problems, unchecked = [], []
    checked = _checked_cases(run_dir)
    for case_id in case_ids:
        if checked is not None and case_id not in checked:
            unchecked.append(case_id)  # preprocessing cannot fix its source files
            continue
        try:
            properties = cache.verified_properties(run_dir, case_id)
        except cache.CacheError as error:
            problems.append(str(error))
            continue
        json_path = cache.case_paths(run_dir, case_id)[1]
        if properties.get("plan_digest") != digest:
            problems.append(f"{json_path}: made with {_plan_difference(properties, plan)}")
        undeclared = sorted({int(v) for v in properties.get("class_voxels", {})} - declared)
        if undeclared:
            problems.append(f"{json_path}: label values {undeclared} are not in plan.json")
    if unchecked:
        shown = ", ".join(unchecked[:10]) + (
            f" and {len(unchecked) - 10} more" * (len(unchecked) > 10)
        )
        raise cache.CacheError(
            f"{len(unchecked)} case(s) failed the data checks when preprocessed: {shown}. Fix or "
            "replace their image and label files (`c2fnas data check DATASET` says what is "
            "wrong with each), or leave them out of dataset.json, then preprocess again"
        )
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise cache.CacheError(
            f"the cache of {len(problems)} case(s) cannot be used: {shown}. "
            f"Rebuild it with `{preprocess_command(run_dir, plan)}`"
        )


def _checked_cases(run_dir: str | Path) -> set[str] | None:
    """The cases that passed the data checks when the run was last preprocessed (the cases of
    ``fingerprint.json``), or None when that is not recorded."""
    try:
        cases = json.loads(RunFolder(run_dir).fingerprint.read_text())["cases"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return set(cases) if isinstance(cases, dict) else None


def cached_case_ids(run_dir: str | Path) -> list[str]:
    """Case ids of the run's dataset, in dataset order (from ``RUN_DIR/dataset.json``)."""
    path = RunFolder(run_dir).dataset_copy
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `c2fnas preprocess` first")
    return [entry_case_id(entry) for entry in json.loads(path.read_text())["training"]]


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
