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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from c2fnas.files.atomic import write_json_atomic
from c2fnas.files.run_folder import FineFolder, RunFolder
from c2fnas.search.store import StoreError, TrialStore


class RunFolderError(ValueError):
    """The run folder is not ready for a search (names the missing file)."""


def dataset_identity(run_dir: Path) -> dict[str, str]:
    """What makes two run folders hold the same data: the plan's digest, a hash of the case ids.

    Raises:
        RunFolderError: ``plan.json`` or ``dataset.json`` is missing or unreadable.
    """
    from c2fnas.data.pipeline import cached_case_ids  # the data stack takes ~1 s to import
    from c2fnas.data.preprocess import Plan

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
) -> TrialStore:
    """Open the stage's study, refusing a run folder or study that holds another search, and
    record the study in the run folder.

    Raises:
        StoreError: the run folder's ``stage`` search, or the stored study, has another identity.
    """
    path = RunFolder(run_dir).search(stage).study
    recorded = _read(path)
    if recorded is not None and recorded["identity"] != identity:
        old = recorded["identity"]
        changed = ", ".join(
            f"{key} {old.get(key)!r} -> {identity.get(key)!r}"
            for key in sorted(set(old) | set(identity))
            if old.get(key) != identity.get(key)
        )
        raise StoreError(
            f"{path}: this run folder holds the {stage} search {recorded['study']}; this "
            f"command's run differs ({changed}). Use a new run folder, or the same data and "
            "settings to resume."
        )
    store = open_store()
    store.check_settings(identity)
    if recorded is None:
        write_json_atomic(path, {"study": study, "identity": identity})
    return store


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
        if not isinstance(recorded.get("study"), str) or not isinstance(
            recorded.get("identity"), dict
        ):
            raise ValueError("needs 'study' (text) and 'identity' (object)")
    except (OSError, ValueError, AttributeError) as error:
        raise RunFolderError(f"{path}: unreadable ({error}); restore it or remove it") from None
    return dict(recorded)
