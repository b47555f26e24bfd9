"""Five-fold cross-validation splits, saved once per run in ``RUN_DIR/splits.json``.

``ordered`` (the paper): the cases in dataset order are cut into 5 contiguous folds; search
trains on folds 0-3 and validates on fold 4 (paper: folds 1-4 / fold 5). ``shuffled``: the same
after a seeded permutation. The file is a list ``[{"train": [...], "val": [...]}, ...]``; once
written it is reused, so every stage of a run sees the same split.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from c2fnas.files.atomic import write_json_atomic
from c2fnas.files.run_folder import RunFolder

log = logging.getLogger(__name__)

NUM_FOLDS = 5
SEARCH_FOLD = 4  # 0-based: the paper's fifth fold validates during search


@dataclass(frozen=True)
class Fold:
    train: list[str]
    val: list[str]


def make_folds(
    case_ids: Sequence[str],
    mode: Literal["ordered", "shuffled"] = "ordered",
    seed: int = 0,
    num_folds: int = NUM_FOLDS,
) -> list[Fold]:
    """Split ``case_ids`` into folds; fold ``k`` validates on chunk ``k``, trains on the rest."""
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique")
    if len(case_ids) < num_folds:
        raise ValueError(f"{num_folds} folds need at least {num_folds} cases, got {len(case_ids)}")
    order = list(case_ids)
    if mode == "shuffled":
        permutation = np.random.default_rng(seed).permutation(len(order))
        order = [order[i] for i in permutation]
    elif mode != "ordered":
        raise ValueError(f"split mode must be 'ordered' or 'shuffled', got {mode!r}")
    chunks = [list(chunk) for chunk in np.array_split(np.array(order, dtype=object), num_folds)]
    return [
        Fold(
            train=[case for j, chunk in enumerate(chunks) if j != k for case in chunk],
            val=chunks[k],
        )
        for k in range(num_folds)
    ]


def load_or_create(
    run_dir: str | Path,
    case_ids: Sequence[str],
    mode: Literal["ordered", "shuffled"] = "ordered",
    seed: int = 0,
) -> list[Fold]:
    """The run's folds: read from ``RUN_DIR/splits.json``, or made and saved there.

    Raises:
        ValueError: an existing ``splits.json`` is malformed or covers other cases than
            ``case_ids`` (naming the file).
    """
    path = RunFolder(run_dir).splits
    if not path.is_file():
        folds = make_folds(case_ids, mode, seed)
        write_json_atomic(path, [{"train": f.train, "val": f.val} for f in folds])
        log.info("wrote %s (%s, seed %d)", path, mode, seed)
        return folds
    try:
        folds = [
            Fold(train=list(f["train"]), val=list(f["val"])) for f in json.loads(path.read_text())
        ]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: malformed splits file ({error})") from None
    for k, fold in enumerate(folds):
        if sorted(fold.train + fold.val) != sorted(case_ids):
            raise ValueError(
                f"{path}: fold {k} does not cover exactly the run's {len(case_ids)} cases; "
                "delete it to make a new split"
            )
    if folds != make_folds(case_ids, mode, seed):
        log.info("%s: reusing the saved split (not %s, seed %d)", path, mode, seed)
    return folds
