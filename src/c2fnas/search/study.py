"""Which study of a trial store a search stage uses: one named after the run's identity.

One database may hold many searches. A stage's study is named ``<stage>-<hash>``, the hash of
the run's identity: the dataset (the preprocessing plan's digest and the case ids of
``RUN_DIR/dataset.json``) and the settings a resumed search must share (``identity()`` of the
stage's settings). The same run started on several machines, even from separate run folders on
the same data, computes the same name and shares its trials; two different runs never do.

The run folder records its study in ``RUN_DIR/<stage>/study.json``. A later command whose
identity differs is refused: the candidates' checkpoints in the folder belong to the recorded
search. Run folders searched before studies were named this way (outputs but no
``study.json``) keep the old study name, ``<stage>``, and are checked against its stored settings.

The settings that change a candidate's score without naming the study (``scoring_settings``:
width, schedule, patch, batch, optimiser, validation) are recorded beside the identity, as the
study's user attributes and in ``study.json``, and a resume with another value is refused with
the setting's old and new value. They are checked rather than hashed into the name so that
every study stored before they were recorded keeps its name and resumes; such a study has no
value to compare and adopts the resuming command's. Two run folders on one ``--storage`` that
differ only in them compute the same name and the second is refused, rather than ranking
candidates trained two ways against each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2fnas.data.pipeline import cached_case_ids
from c2fnas.data.preprocess import Plan
from c2fnas.files.atomic import write_json_atomic
from c2fnas.files.run_folder import FineFolder, RunFolder
from c2fnas.search.store import StoreError, TrialStore

if TYPE_CHECKING:
    from c2fnas.training.config import RunConfig


class RunFolderError(ValueError):
    """The run folder is not ready for a search (names the missing file)."""


def dataset_identity(run_dir: Path) -> dict[str, str]:
    """What makes two run folders hold the same data: the plan's digest, a hash of the case ids.

    Raises:
        RunFolderError: ``plan.json`` or ``dataset.json`` is missing or unreadable.
    """
    try:
        digest = Plan.load(run_dir).digest()
        cases = cached_case_ids(run_dir)
    except (OSError, ValueError, KeyError) as error:
        raise RunFolderError(f"{run_dir}: not a preprocessed run folder ({error})") from None
    case_hash = hashlib.sha256("\n".join(cases).encode()).hexdigest()[:16]
    return {"plan": digest, "cases": case_hash}


def study_name(stage: str, identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True)
    return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def scoring_settings(config: RunConfig, iterations_factor: int = 1) -> dict[str, Any]:
    """The training settings of ``config.for_search(iterations_factor)`` that change the score
    of a network trained by a search stage, as JSON values (the store keeps JSON).

    In: the search schedule (iterations, milestones), the patch and batch, the foreground
    oversampling, and the optimiser (learning rate, warm-up, momentum, weight decay, decay
    factor). Out: the precision, compiling, data-loading workers and window batch, which change
    the arithmetic or the speed and not the experiment (workers on a CPU and on a GPU,
    resolving ``precision: auto`` differently, may share a search), and the seed, which names
    the study already. Each stage adds what it scores with (the coarse stage the width and
    validation, the fine stage its scoring stride).
    """
    schedule = config.for_search(iterations_factor).training
    return {
        "iterations": schedule.iterations,
        "milestones": list(schedule.milestones),
        "patch": list(config.data.patch),
        "batch_size": config.data.batch_size,
        "foreground_oversample": config.data.foreground_oversample,
        "learning_rate": schedule.learning_rate,
        "warmup_start_lr": schedule.warmup_start_lr,
        "warmup_iterations": schedule.warmup_iterations,
        "momentum": schedule.momentum,
        "weight_decay": schedule.weight_decay,
        "gamma": schedule.gamma,
        # Settings added later count only where they differ from their default, so that the
        # studies of runs planned before they existed keep their names.
        **{
            name: value
            for name, value, default in (
                ("lr_decay", schedule.lr_decay, "step"),
                ("poly_exponent", schedule.poly_exponent, 0.9),
                ("deep_supervision", schedule.deep_supervision, False),
                ("augmentation", config.data.augmentation, "paper"),
            )
            if value != default
        },
    }


def run_study(run_dir: Path, stage: str, identity: dict[str, Any]) -> str:
    """The study of ``stage`` for this run folder: the old name ``stage`` for a folder searched
    before studies were named by identity, otherwise ``study_name(stage, identity)``."""
    folder = RunFolder(run_dir).search(stage)
    recorded = _read(folder.study)
    outputs = [folder.trials_db, folder.trials_csv]
    if isinstance(folder, FineFolder):
        outputs.append(folder.candidates_csv)
    if recorded is None and any(path.exists() for path in outputs):
        return stage
    if recorded is not None and recorded["study"] == stage:
        return stage
    return study_name(stage, identity)


def open_study(
    run_dir: Path,
    stage: str,
    study: str,
    identity: dict[str, Any],
    open_store: Callable[[], TrialStore],
    scoring: dict[str, Any] | None = None,
) -> TrialStore:
    """Open the stage's study, refusing a run folder or study that holds another search or
    scores its candidates with other ``scoring`` settings, and record both in the run folder.

    Raises:
        StoreError: the run folder's ``stage`` search, or the stored study, has another identity
            or other scoring settings (the message names each setting, old -> new).
    """
    path = RunFolder(run_dir).search(stage).study
    recorded = _read(path)
    scoring = scoring or {}
    if recorded is not None:
        # a setting recorded by only one side (an older record, a toy evaluator) is not a change
        shared = recorded.get("scoring", {}).keys() & scoring.keys()
        changed = _changes(recorded["identity"], identity) + _changes(
            {key: recorded["scoring"][key] for key in shared},
            {key: scoring[key] for key in shared},
        )
        if changed:
            raise StoreError(
                f"{path}: this run folder holds the {stage} search {recorded['study']}; this "
                f"command's run differs ({', '.join(changed)}). Use a new run folder, or the same "
                "data and settings to resume."
            )
    store = open_store()
    store.check_settings(identity)
    store.check_settings(scoring)
    record = recorded or {"study": study, "identity": identity}
    merged = {**record.get("scoring", {}), **scoring}
    if recorded is None or record.get("scoring") != merged:
        write_json_atomic(path, {**record, "scoring": merged})
    return store


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key old -> new`` for every key whose value differs (a missing one reads None)."""
    return [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
        if (
            not isinstance(recorded.get("study"), str)
            or not isinstance(recorded.get("identity"), dict)
            or not isinstance(recorded.get("scoring", {}), dict)
        ):
            raise ValueError("needs 'study' (text), 'identity' and 'scoring' (objects)")
    except (OSError, ValueError, AttributeError) as error:
        raise RunFolderError(f"{path}: unreadable ({error}); restore it or remove it") from None
    return dict(recorded)
