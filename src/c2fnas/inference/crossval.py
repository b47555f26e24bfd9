"""Out-of-fold predictions of the training cases, on which post-processing is chosen.

Every training case is predicted by the fold model that validated on it (so never by a model
that trained on it), in the case's own geometry, into ``RUN_DIR/crossval/``; then
``postprocess.choose_from_files`` decides per class whether keeping only the largest connected
component raises the mean Dice over those cases, as nnU-Net does, and ``c2fnas run`` records the
choice with its evidence in ``RUN_DIR/postprocessing.json`` (``predict --postprocess auto``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from c2fnas.accel.precision import resolve_precision
from c2fnas.data.loader import FLIP_AXES
from c2fnas.data.msd import read_dataset
from c2fnas.data.pipeline import cached_case_ids
from c2fnas.data.splits import load_or_create
from c2fnas.files.run_folder import RunFolder
from c2fnas.inference.models import LoadedModel, load_model
from c2fnas.inference.predict import predict_case

log = logging.getLogger(__name__)


def predict_out_of_fold(
    run_dir: Path,
    dataset_dir: Path,
    folds: Sequence[int],
    stride: int | Sequence[int],
    precision: str = "auto",
    tta: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    accelerated: bool = False,
) -> list[tuple[Path, Path]]:
    """Predict the validation cases of each of ``folds`` with that fold's best model
    (``accelerated``: see ``load_model``).

    Resumable: a case whose prediction exists is not predicted again. Returns the
    ``(prediction, reference label)`` file pairs.
    """
    folder = RunFolder(run_dir)
    cases = {case.case_id: case for case in read_dataset(dataset_dir).training}
    splits = load_or_create(run_dir, cached_case_ids(run_dir))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = resolve_precision(precision, device)
    todo = [(fold, case_id) for fold in folds for case_id in splits[fold].val]
    pairs: list[tuple[Path, Path]] = []
    loaded: dict[int, list[LoadedModel]] = {}
    for done, (fold, case_id) in enumerate(todo, start=1):
        case = cases[case_id]
        assert case.label is not None, "training cases have labels"
        out_path = folder.crossval / f"{case_id}.nii.gz"
        if not out_path.is_file():
            if fold not in loaded:
                # one at a time
                loaded = {fold: [load_model(folder.fold(fold).root, device, accelerated)]}
            predict_case(
                case.image, loaded[fold], out_path, stride=stride, precision=resolved,
                device=device, mirror_axes=FLIP_AXES if tta else (),
                more_channels=case.images[1:],
            )  # fmt: skip
        pairs.append((out_path, case.label))
        if progress is not None:
            progress(case_id, done, len(todo))
    return pairs
