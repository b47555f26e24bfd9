"""``RUN_DIR/pipeline.json``: what ``c2fnas run`` has finished, as one typed value.

``RunState`` is the only reader and writer of the file. It holds the dataset the run belongs to
(``DatasetIdentity``), the size and modification time of each training case's source files
when it was preprocessed (``sources``, as ``c2fnas.data.fingerprint.stamps`` gives them), the
plan's estimated seconds per part and its budget, the re-fits of the final training's schedule
to the time measured (``Refit``: early in the first fold, then before each later fold), and one
``StageRecord`` per finished stage: its seconds (with those of its attempts a signal or an error
stopped: ``interrupted`` keeps them until the stage finishes) and its result, a small type per
stage whose ``summary()`` is the line ``c2fnas run`` prints for it. The value is frozen:
``with_stage`` and friends return a new one, and ``write`` saves it atomically.

The file (schema ``VERSION``)::

    {"version": 2,
     "dataset": {"path": "/data/Task04_Hippocampus", "cases": 260, "sha256": "..."},
     "planned": {"data": 60.0, "training": 3600.0, ...},
     "budget": 3600.0,
     "refits": [{"at_iteration": 316, "step": 0.17, "validation": 1.9, ...}, ...],
     "sources": {"hippocampus_001": {"image": [size, mtime_ns], "label": [...]}, ...},
     "interrupted": {"train": 3554.5},
     "stages": {"check": {"done": true, "seconds": 1.2, "cases": 260}, ...}}

Files written before the version (version 0) have the same layout and still load; a stage
record that lacks a field (older runs recorded fewer) takes the field's default, and a file
without ``sources`` (older runs) has ``sources`` None, and one without ``interrupted`` none; one
without ``budget`` (runs planned before the re-fit) is never re-fitted. Version 1 held at most
one re-fit, as ``"refit": {...}``: it reads as the only one. Version 2 added ``refits`` (an older
c2fnas, which would ignore the later re-fits, refuses the file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from c2fnas.files.atomic import write_json_atomic

VERSION = 2


class RunStateError(ValueError):
    """``pipeline.json`` is unreadable or from a newer version; the message names the file."""


@dataclass(frozen=True)
class DatasetIdentity:
    """The dataset a run belongs to: its folder, training cases and ``dataset.json`` digest."""

    path: str
    cases: int
    sha256: str


@dataclass(frozen=True)
class CheckResult:
    cases: int = 0

    def summary(self) -> str:
        return f"{self.cases} cases"


@dataclass(frozen=True)
class PreprocessResult:
    cases: int = 0

    def summary(self) -> str:
        return f"{self.cases} cases"


@dataclass(frozen=True)
class SearchResult:
    """The coarse or the fine stage: candidates evaluated, best validation Dice."""

    evaluated: int = 0
    best_dice: float | None = None

    def summary(self) -> str:
        best = "-" if self.best_dice is None else f"{self.best_dice:.3f}"
        return f"{self.evaluated} evaluated, best Dice {best}"


@dataclass(frozen=True)
class ScaleResult:
    widths: int = 0

    def summary(self) -> str:
        return f"{self.widths} widths"


@dataclass(frozen=True)
class TrainResult:
    """The folds trained (None: all five, as runs recorded before the folds were) and each
    fold's best mean validation Dice, in the same order."""

    folds: tuple[int, ...] | None = None
    fold_dice: tuple[float, ...] = ()

    def summary(self) -> str:
        return "fold Dice " + ", ".join(f"{dice:.3f}" for dice in self.fold_dice)


@dataclass(frozen=True)
class PostprocessResult:
    """The classes whose largest component alone is kept, chosen on ``cases`` out-of-fold
    predictions."""

    largest_component: tuple[int, ...] = ()
    cases: int = 0

    def summary(self) -> str:
        if not self.largest_component:
            return "none"
        return f"largest component kept for classes {list(self.largest_component)}"


@dataclass(frozen=True)
class PredictResult:
    cases: int = 0

    def summary(self) -> str:
        return f"{self.cases} cases"


@dataclass(frozen=True)
class EvaluateResult:
    """Whether there were test labels to score against, and the ensemble's mean Dice."""

    evaluated: bool = False
    mean_dice: float | None = None

    def summary(self) -> str:
        if not self.evaluated or self.mean_dice is None:
            return "no labelsTs: not evaluated"
        return f"test mean Dice {self.mean_dice:.4f} (fold ensemble)"


@dataclass(frozen=True)
class ReportResult:
    files: tuple[str, ...] = ()

    def summary(self) -> str:
        return ", ".join(Path(file).name for file in self.files)


StageResult = (
    CheckResult | PreprocessResult | SearchResult | ScaleResult | TrainResult
    | PostprocessResult | PredictResult | EvaluateResult | ReportResult
)  # fmt: skip

RESULT_TYPES: dict[str, type[StageResult]] = {
    "check": CheckResult,
    "preprocess": PreprocessResult,
    "coarse": SearchResult,
    "fine": SearchResult,
    "scale": ScaleResult,
    "train": TrainResult,
    "postprocess": PostprocessResult,
    "predict": PredictResult,
    "evaluate": EvaluateResult,
    "report": ReportResult,
}
"""Every stage of ``c2fnas run``, in order, with the type of its result."""

PLANNED_PARTS = {
    "data": ("check", "preprocess"),
    "coarse": ("coarse",),
    "fine": ("fine",),
    "training": ("scale", "train"),
    "prediction": ("postprocess", "predict", "evaluate", "report"),
}
"""The parts of a plan's time estimate (``c2fnas.planning``) and the stages that spend it."""

Result = TypeVar("Result", bound=StageResult)


@dataclass(frozen=True)
class Refit:
    """The final training's schedule re-fitted to the measured time
    (``c2fnas.costs.schedule.refit_training``): once early in the first fold, from the time of
    its first iterations, and again before each later fold, from the last fold finished.
    ``c2fnas run`` applies the last one's ``training`` over ``plan.yaml`` when it resumes (a
    fold that had started keeps the schedule in its own ``config.yaml``).

    Attributes:
        at_iteration: the first fold's iteration when it was re-fitted (0 before a later fold).
        step: measured seconds of a training iteration (batch loading and checkpoints included).
        validation: measured seconds of a validation.
        seconds: what each fold left was re-fitted to take: its share of the budget's planned
            part less what the finished stages (and the finished folds) spent.
        planned_iterations: the iterations per fold before this re-fit.
        training: the re-fitted fields of the configuration's ``training`` section.
        before_fold: the fold about to start (a later fold's re-fit); None for the first fold's.
    """

    at_iteration: int
    step: float
    validation: float
    seconds: float
    planned_iterations: int
    training: Mapping[str, Any]
    before_fold: int | None = None

    @property
    def iterations(self) -> int:
        return int(self.training["iterations"])

    @property
    def scheduled_seconds(self) -> float:
        """What the re-fitted schedule takes a fold at the measured step and validation: less
        than ``seconds`` where the paper's 40,000 iterations cap it, more where a floor holds."""
        every = int(self.training.get("validate_every", self.iterations))
        validations = -(-self.iterations // every)  # the last one too
        return self.iterations * self.step + validations * self.validation

    def summary(self) -> str:
        when = (
            f"at iteration {self.at_iteration} of the first fold"
            if self.before_fold is None
            else f"before fold {self.before_fold}, from the last fold finished,"
        )
        return (
            f"re-fitted {when} to the measured {self.step:.3f} s a step and "
            f"{self.validation:.3g} s a validation: {self.planned_iterations:,} -> "
            f"{self.iterations:,} iterations per fold ({self.scheduled_seconds / 60:.1f} min "
            + (
                f"each at that step, of the {self.seconds / 60:.1f} min a fold may have)"
                if self.seconds > 0
                else "each at that step: the budget is spent)"
            )
            + (
                f"; no fewer than {self.iterations:,}: a fold's floor holds"
                if self.scheduled_seconds > max(self.seconds, 0.0) * 1.05
                else ""
            )
        )


@dataclass(frozen=True)
class StageRecord:
    """One finished stage: its wall-clock seconds and its result."""

    seconds: float
    result: StageResult

    def summary(self) -> str:
        return self.result.summary()


@dataclass(frozen=True)
class RunState:
    """The finished stages of a run (in the order they finished), its dataset, its plan's
    estimate per part (None for a run with a preset or a configuration file) and the stamps of
    the source files it was preprocessed from, per training case (None before preprocessing)."""

    stages: Mapping[str, StageRecord] = field(default_factory=dict)
    dataset: DatasetIdentity | None = None
    planned: Mapping[str, float] | None = None
    sources: Mapping[str, Mapping[str, Any]] | None = None
    interrupted: Mapping[str, float] = field(default_factory=dict)
    """Seconds spent in attempts of an unfinished stage that were stopped (a signal, an error):
    added to the stage's seconds when it finishes, so a resumed run accounts for all its time."""
    budget: float | None = None
    """The wall-clock seconds the plan fitted the run into (None: no budget, or no plan)."""
    refits: tuple[Refit, ...] = ()
    """The re-fits of the final training's schedule, in the order they were made."""

    @classmethod
    def read(cls, path: Path) -> RunState:
        """The state saved in ``path``; an empty one when there is no file yet.

        Raises:
            RunStateError: the file is unreadable, from a newer version, or names an unknown
                stage (the message names the file and says to delete it to rerun all).
        """
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls._from_json(data)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise RunStateError(f"{path}: unreadable ({error}); delete it to rerun all") from None

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> RunState:
        version = data.get("version", 0)
        if version > VERSION:
            raise ValueError(f"version {version}, newer than this c2fnas reads ({VERSION})")
        stages = {}
        for stage, record in data["stages"].items():
            if stage not in RESULT_TYPES:
                raise ValueError(f"unknown stage {stage!r}")
            if record.get("done", True):
                stages[stage] = StageRecord(
                    float(record.get("seconds", 0.0)), _result(RESULT_TYPES[stage], record)
                )
        dataset = DatasetIdentity(**data["dataset"]) if "dataset" in data else None
        planned = data.get("planned")
        planned = {part: float(seconds) for part, seconds in planned.items()} if planned else None
        sources = data.get("sources")
        if sources is not None and not all(isinstance(s, dict) for s in sources.values()):
            raise ValueError("sources: not a stamp per case")
        interrupted = {
            stage: float(seconds) for stage, seconds in data.get("interrupted", {}).items()
        }
        budget = float(data["budget"]) if data.get("budget") is not None else None
        refits = data.get("refits", [data["refit"]] if data.get("refit") is not None else [])
        refits = tuple(Refit(**refit) for refit in refits)
        return cls(stages, dataset, planned, sources, interrupted, budget, refits)

    def write(self, path: Path) -> None:
        data: dict[str, Any] = {"version": VERSION}
        if self.dataset is not None:
            data["dataset"] = asdict(self.dataset)
        if self.planned is not None:
            data["planned"] = dict(self.planned)
        if self.budget is not None:
            data["budget"] = self.budget
        if self.refits:
            data["refits"] = [
                {**asdict(refit), "training": dict(refit.training)} for refit in self.refits
            ]
        if self.sources is not None:
            data["sources"] = {case: dict(stamps) for case, stamps in self.sources.items()}
        if self.interrupted:
            data["interrupted"] = {stage: round(s, 1) for stage, s in self.interrupted.items()}
        data["stages"] = {
            stage: {"done": True, "seconds": round(record.seconds, 1), **asdict(record.result)}
            for stage, record in self.stages.items()
        }
        write_json_atomic(path, data)

    def with_stage(self, stage: str, seconds: float, result: StageResult) -> RunState:
        """This state with ``stage`` finished (an earlier record of it replaced in its place)
        after ``seconds`` in its last attempt; the seconds of its interrupted attempts are
        added."""
        if not isinstance(result, RESULT_TYPES[stage]):
            raise TypeError(f"stage {stage}: a {RESULT_TYPES[stage].__name__}, not {result!r}")
        earlier = self.interrupted.get(stage, 0.0)
        interrupted = {name: value for name, value in self.interrupted.items() if name != stage}
        record = StageRecord(seconds + earlier, result)
        return replace(self, stages={**self.stages, stage: record}, interrupted=interrupted)

    def with_interrupted(self, stage: str, seconds: float) -> RunState:
        """This state with an attempt of ``stage`` stopped after ``seconds``."""
        spent = self.interrupted.get(stage, 0.0) + seconds
        return replace(self, interrupted={**self.interrupted, stage: spent})

    def with_dataset(self, dataset: DatasetIdentity) -> RunState:
        return replace(self, dataset=dataset)

    def with_planned(self, planned: Mapping[str, float], budget: float | None) -> RunState:
        """This state with a new plan's estimate and budget (and no re-fit of an older plan)."""
        return replace(self, planned=dict(planned), budget=budget, refits=())

    def with_refit(self, refit: Refit) -> RunState:
        """This state with ``refit`` made after the ones before."""
        return replace(self, refits=(*self.refits, refit))

    def with_sources(self, sources: Mapping[str, Mapping[str, Any]]) -> RunState:
        return replace(self, sources=dict(sources))

    def without_stages(self, *stages: str) -> RunState:
        """This state with ``stages`` unfinished (they run again)."""
        kept = {stage: record for stage, record in self.stages.items() if stage not in stages}
        return replace(self, stages=kept)

    def result(self, stage: str, kind: type[Result]) -> Result | None:
        """The result of ``stage`` when it finished, else None."""
        record = self.stages.get(stage)
        if record is None:
            return None
        assert isinstance(record.result, kind), f"{stage} records a {type(record.result)}"
        return record.result

    @property
    def seconds(self) -> float:
        """The seconds of every finished stage together."""
        return sum(record.seconds for record in self.stages.values())

    def planned_against_spent(self) -> list[tuple[str, float, float]]:
        """``(part, planned seconds, spent seconds)`` of a planned run (empty without a plan)."""
        planned = self.planned or {}
        return [
            (part, planned[part],
             sum(self.stages[stage].seconds for stage in members if stage in self.stages))
            for part, members in PLANNED_PARTS.items()
            if part in planned
        ]  # fmt: skip


def _result(kind: type[Result], record: dict[str, Any]) -> Result:
    """``kind`` from a stage record's fields (lists become tuples; missing ones: defaults)."""
    names = {item.name for item in fields(kind)}
    values: dict[str, Any] = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in record.items()
        if name in names
    }
    return kind(**values)
