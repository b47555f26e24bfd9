"""Post-processing chosen on cross-validation, as nnU-Net does.

For each foreground class, keeping only its largest connected component (face-connected
voxels) removes false-positive islands but can also cut off a true second piece. The choice is
made on the out-of-fold predictions of the cross-validation: a class is post-processed only when
doing so raises its mean Dice over those cases. Removed voxels become background. Classes are
decided independently: post-processing one class changes no other foreground class.

``RUN_DIR/postprocessing.json``::

    {"version": 1, "largest_component": [1],
     "classes": {"1": {"dice": 0.81, "dice_largest_component": 0.84, "cases": 52}, ...}}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy import ndimage

from c2fnas.data.io import load_label
from c2fnas.evaluation.metrics import dice
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.run_folder import RunFolder

log = logging.getLogger(__name__)

POSTPROCESSING_VERSION = 1


class ClassEvidence(BaseModel):
    """Mean out-of-fold Dice of one class without and with the largest-component step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dice: float
    dice_largest_component: float
    cases: int


class Postprocessing(BaseModel):
    """Which label values keep only their largest connected component; the evidence behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = POSTPROCESSING_VERSION
    largest_component: tuple[int, ...] = ()
    classes: dict[int, ClassEvidence] = {}

    def apply(self, label: np.ndarray) -> np.ndarray:
        """The label map with every chosen class reduced to its largest component."""
        for value in self.largest_component:
            label = keep_largest_component(label, value)
        return label

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(Path(path), self.model_dump_json(indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Postprocessing:
        """Read a post-processing file.

        Raises:
            ValueError: naming the file, when it is missing, not JSON or not of this form.
        """
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as error:
            raise ValueError(f"{path}: cannot read the post-processing file ({error})") from None
        except ValidationError as error:
            raise ValueError(f"{path}: not a c2fnas post-processing file ({error})") from None


def keep_largest_component(label: np.ndarray, value: int) -> np.ndarray:
    """``label`` with the voxels of ``value`` outside its largest component set to 0.

    Ties between equally large components go to the first in scan order.
    """
    components, count = ndimage.label(label == value)
    if count <= 1:
        return label
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    kept = label.copy()
    kept[(components != 0) & (components != int(sizes.argmax()))] = 0
    return kept


def choose_postprocessing(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], labels: Sequence[int]
) -> Postprocessing:
    """Decide per class whether keeping its largest component raises the mean Dice.

    Args:
        cases: ``(prediction, reference)`` label maps of the out-of-fold cases of every fold.
        labels: foreground label values to decide on.
    """
    before: dict[int, list[float]] = {value: [] for value in labels}
    after: dict[int, list[float]] = {value: [] for value in labels}
    count = 0
    for prediction, reference in cases:  # a stream: all cases of a CT dataset need not fit
        count += 1
        for value in labels:
            expected = reference == value
            before[value].append(dice(prediction == value, expected))
            after[value].append(dice(keep_largest_component(prediction, value) == value, expected))
    if count == 0:
        raise ValueError("post-processing needs at least one out-of-fold case")
    evidence = {
        value: ClassEvidence(
            dice=float(np.mean(before[value])),
            dice_largest_component=float(np.mean(after[value])),
            cases=count,
        )
        for value in labels
    }
    chosen = tuple(v for v, e in evidence.items() if e.dice_largest_component > e.dice)
    for value, entry in evidence.items():
        log.info(
            "class %d: out-of-fold Dice %.4f, largest component only %.4f -> %s", value,
            entry.dice, entry.dice_largest_component, "keep" if value in chosen else "skip",
        )  # fmt: skip
    return Postprocessing(largest_component=chosen, classes=evidence)


def choose_from_files(
    pairs: Iterable[tuple[Path, Path]], labels: Sequence[int], out_path: Path | None = None
) -> Postprocessing:
    """``choose_postprocessing`` on (prediction, reference) NIfTI files; writes ``out_path``
    (atomically) when given, e.g. ``RUN_DIR/postprocessing.json``."""
    cases = (
        (load_label(prediction)[0], load_label(reference)[0]) for prediction, reference in pairs
    )
    chosen = choose_postprocessing(cases, labels)
    if out_path is not None:
        chosen.save(out_path)
    return chosen


def find_postprocessing(model_paths: Sequence[Path], levels: int = 3) -> Path | None:
    """The ``postprocessing.json`` of the models' run, for ``--postprocess auto``.

    Looks in each model path and up to ``levels`` folders above it (``RUN/train/fold_0/best``
    reaches ``RUN``); the nearest file wins.

    Raises:
        ValueError: the models reach different post-processing files.
    """
    found = set()
    for path in model_paths:
        resolved = path.resolve()
        for folder in [resolved, *resolved.parents][: levels + 1]:
            candidate = RunFolder(folder).postprocessing
            if candidate.is_file():
                found.add(candidate)
                break
    if len(found) > 1:
        raise ValueError(
            f"the models reach different post-processing files ({', '.join(map(str, found))}); "
            "pass one with --postprocess FILE"
        )
    return found.pop() if found else None
