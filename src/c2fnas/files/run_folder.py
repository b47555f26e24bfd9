"""The run folder: every path of its layout (``docs/design.md``), named once.

Stages write under one folder; each module asks this type for a path instead of spelling it::

    RUN_DIR/
      .lock  dataset.json  plan.json  fingerprint.json  splits.json  config.yaml  pipeline.json
      preprocessed/<case>.npz, <case>.json
      train/fold_K/                      a training folder (see ``TrainingFolder``)
      coarse/  trials.db  trials.csv  search.png  best_topology.json  candidates/<topology>/
      fine/    supernet/  trials.db  candidates.csv  best_architecture.json
      scale/   width_<w>/  scaling.csv  scaling.png
      predictions/  evaluation/summary.json, cases.csv
      report.md  report.html  architecture.png  postprocessing.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainingFolder:
    """What one training run writes: ``config.yaml``, ``checkpoints/``, ``best/``, ``last/``,
    ``progress.png`` and ``tb/``."""

    root: Path

    @property
    def lock(self) -> Path:
        """Held by the process training into this folder (``c2fnas.files.lock``)."""
        return self.root / ".lock"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def last(self) -> Path:
        return self.root / "last"

    @property
    def progress_plot(self) -> Path:
        return self.root / "progress.png"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"


@dataclass(frozen=True)
class SearchFolder:
    """What a search stage writes (``coarse/`` or ``fine/``)."""

    root: Path

    @property
    def trials_db(self) -> Path:
        """The default trial store (SQLite) when no ``--storage`` is given."""
        return self.root / "trials.db"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def study(self) -> Path:
        """Which study of the trial store holds this search, and what identifies it."""
        return self.root / "study.json"

    @property
    def logs(self) -> Path:
        """One log file per worker process."""
        return self.root / "logs"


@dataclass(frozen=True)
class CoarseFolder(SearchFolder):
    @property
    def plot(self) -> Path:
        return self.root / "search.png"

    @property
    def best_topology(self) -> Path:
        return self.root / "best_topology.json"

    def candidate(self, name: str) -> TrainingFolder:
        """The training folder of one candidate topology (named by its code text)."""
        return TrainingFolder(self.root / "candidates" / name)


@dataclass(frozen=True)
class FineFolder(SearchFolder):
    @property
    def supernet(self) -> TrainingFolder:
        return TrainingFolder(self.root / "supernet")

    @property
    def candidates_csv(self) -> Path:
        return self.root / "candidates.csv"

    @property
    def best_architecture(self) -> Path:
        return self.root / "best_architecture.json"


@dataclass(frozen=True)
class ScaleFolder:
    root: Path

    @property
    def lock(self) -> Path:
        """Held by the process scaling into this folder (``c2fnas.files.lock``)."""
        return self.root / ".lock"

    def width(self, width: float) -> TrainingFolder:
        return TrainingFolder(self.root / f"width_{width:g}")

    @property
    def table(self) -> Path:
        return self.root / "scaling.csv"

    @property
    def plot(self) -> Path:
        return self.root / "scaling.png"


@dataclass(frozen=True)
class RunFolder:
    """Every path of a run folder; ``RunFolder(run_dir).plan`` is ``run_dir/plan.json``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str is welcome too

    @property
    def lock(self) -> Path:
        """Held by every process writing into the run folder (``c2fnas.files.lock``)."""
        return self.root / ".lock"

    @property
    def dataset_copy(self) -> Path:
        """The source ``dataset.json``, plus ``"source"``: the dataset folder's absolute path."""
        return self.root / "dataset.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def cache(self) -> Path:
        """``<case>.npz`` and ``<case>.json`` per preprocessed case."""
        return self.root / "preprocessed"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def config(self) -> Path:
        """The resolved configuration of ``c2fnas run``."""
        return self.root / "config.yaml"

    @property
    def plan_config(self) -> Path:
        """The configuration ``c2fnas plan`` (or ``c2fnas run`` without a preset) made."""
        return self.root / "plan.yaml"

    @property
    def given_architecture(self) -> Path:
        """The architecture ``c2fnas run --arch`` trains instead of searching one."""
        return self.root / "architecture.json"

    @property
    def pipeline_state(self) -> Path:
        """The finished stages of ``c2fnas run``; read and written by ``RunState`` alone."""
        return self.root / "pipeline.json"

    def fold(self, fold: int) -> TrainingFolder:
        return TrainingFolder(self.root / "train" / f"fold_{fold}")

    @property
    def coarse(self) -> CoarseFolder:
        return CoarseFolder(self.root / "coarse")

    @property
    def fine(self) -> FineFolder:
        return FineFolder(self.root / "fine")

    def search(self, stage: str) -> SearchFolder:
        """``coarse`` or ``fine``."""
        if stage not in ("coarse", "fine"):
            raise ValueError(f"no search stage {stage!r}; choose coarse or fine")
        return self.coarse if stage == "coarse" else self.fine

    @property
    def scale(self) -> ScaleFolder:
        return ScaleFolder(self.root / "scale")

    @property
    def crossval(self) -> Path:
        """Out-of-fold predictions of the training cases (each by the fold that did not train
        on it), from which ``postprocessing.json`` is chosen."""
        return self.root / "crossval"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def evaluation_summary(self) -> Path:
        return self.evaluation / "summary.json"

    @property
    def evaluation_cases(self) -> Path:
        return self.evaluation / "cases.csv"

    @property
    def postprocessing(self) -> Path:
        return self.root / "postprocessing.json"

    @property
    def report_markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def architecture_figure(self) -> Path:
        return self.root / "architecture.png"
