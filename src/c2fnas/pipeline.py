"""``c2fnas run``: every stage from an MSD folder to evaluated predictions, resumable.

Stages, in order: ``check``, ``preprocess``, ``coarse``, ``fine``, ``scale`` (only when asked),
``train`` (the final architecture on the 5 folds), ``postprocess`` (out-of-fold predictions of
the training cases choose ``postprocessing.json``), ``predict`` (``imagesTs`` with the fold
ensemble, majority vote, post-processed), ``evaluate`` (when ``labelsTs`` exists next to
``imagesTs``) and ``report``. ``RUN_DIR/pipeline.json`` (``c2fnas.files.run_state``) records
each finished stage, its time and its result; a rerun skips the finished stages and resumes the
unfinished one (every stage is resumable by itself).

``pipeline.json`` also records the dataset the run belongs to (``dataset_identity``), and
``config.yaml`` the configuration: a rerun with another dataset or configuration is refused
rather than skipping every stage and reporting the old results. It records the size and mtime of
each training case's files when they were preprocessed, too: a file changed since is preprocessed
again when nothing was made from the cache yet, and otherwise refused, naming the file (a new run
folder, or ``accept_changed_data`` to keep the results). Given no configuration, the
pipeline plans the run first (``c2fnas.planning``) and records the plan's estimate there too.

Under a budget the final training's schedule is re-fitted to the time measured: early in the
first fold, to the time of its first iterations (``Pipeline.reschedule``), as the plan's step is
a short measurement on random tensors; then before each later fold, to the pace of the last
fold finished (``Pipeline.refit_later``), as the early measurement and the machine's speed drift.
The re-fits are recorded in ``pipeline.json`` and the last applies over ``plan.yaml`` when the
run resumes; a fold that had started resumes with the schedule in its own ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c2fnas.accel.process import ThreadGovernor
from c2fnas.costs.schedule import REFIT_AFTER, SAFETY, finished_step, refit_training
from c2fnas.costs.solve import MIN_LATE_FOLD_ITERATIONS
from c2fnas.data import cache
from c2fnas.data.check import check_dataset
from c2fnas.data.fingerprint import changed_files, stamps
from c2fnas.data.io import image_files_in
from c2fnas.data.msd import TEST_IMAGES, read_dataset, read_description
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import NUM_FOLDS
from c2fnas.evaluation.metrics import evaluate_folders, summarize
from c2fnas.evaluation.report import write_csv, write_summary
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.lock import folder_lock
from c2fnas.files.run_folder import RunFolder
from c2fnas.files.run_state import (
    CheckResult,
    DatasetIdentity,
    EvaluateResult,
    PostprocessResult,
    PredictResult,
    PreprocessResult,
    Refit,
    ReportResult,
    RunState,
    RunStateError,
    ScaleResult,
    SearchResult,
    StageResult,
    TrainResult,
)
from c2fnas.inference.crossval import predict_out_of_fold
from c2fnas.inference.postprocess import choose_from_files
from c2fnas.inference.predict import predict_folder
from c2fnas.planning import plan_run
from c2fnas.report import write_report
from c2fnas.search.stages import coarse_stage, final_architecture, fine_stage, scale_stage
from c2fnas.space import C2FNAS_PANC, Architecture
from c2fnas.training.checkpoint import latest_checkpoint
from c2fnas.training.config import RunConfig, SearchMode, load_config, read_config
from c2fnas.training.loop import Reschedule, Timings
from c2fnas.training.loop import TrainResult as FitResult
from c2fnas.training.run import train

logger = logging.getLogger(__name__)

STAGES = (
    "check", "preprocess", "coarse", "fine", "scale", "train", "postprocess", "predict",
    "evaluate", "report",
)  # fmt: skip
DEFAULT_STAGES = tuple(stage for stage in STAGES if stage != "scale")
SEARCH_STAGES = ("coarse", "fine")


class PipelineError(Exception):
    """A stage cannot run; the message names the stage and the reason."""


def description_digest(description: dict[str, Any]) -> str:
    """SHA-256 of a ``dataset.json`` description in canonical form (sorted keys, compact).

    It covers the labels, modalities and case list, not the file's formatting. The ``source``
    key that ``preprocess`` adds to the run folder's copy is left out.
    """
    payload = {key: value for key, value in description.items() if key != "source"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def dataset_identity(dataset_dir: Path) -> DatasetIdentity:
    """What ``pipeline.json`` records of a run's dataset: folder, case count and digest.

    Raises:
        DatasetError: ``dataset.json`` is missing or unusable (the message names it).
    """
    description = read_description(dataset_dir)
    return DatasetIdentity(
        path=str(Path(dataset_dir).resolve()),
        cases=len(description["training"]),
        sha256=description_digest(description),
    )


@dataclass
class Pipeline:
    """One run: where the data is, where the run lives, how it is configured.

    Attributes:
        dataset_dir: the MSD folder.
        run_dir: every output goes below it.
        config: the resolved configuration (saved as ``RUN_DIR/config.yaml``); None plans the
            run in ``run``: the run folder's ``plan.yaml`` when it has one (a resumed run keeps
            its plan), otherwise a new plan from the data, this machine and ``budget``.
        budget: wall-clock seconds a new plan fits the run into (None: the paper's schedule);
            only read when planning.
        search: forces ``search.mode`` (and so what the plan searches).
        workers: local search workers (one per GPU on GPU machines).
        storage: trial store URL or journal file shared by search workers (default: SQLite files).
        grace_period: seconds without a heartbeat after which a search worker counts as dead
            and its candidate is handed out again.
        architecture: an architecture to train instead of searching one (e.g. C2FNAS-Panc's):
            the coarse and fine stages are skipped; it is copied into the run folder, and a rerun
            with another architecture is refused.
        folds: the folds to train (default: the configuration's ``training.folds``, all five
            unless a plan chose fewer); prediction ensembles the folds trained.
        accept_changed_data: a training case's file changed since it was preprocessed, and the
            run made more from it than the cache: keep the results and record the files as they
            are now (their contents are the same: copied without their times) rather than refuse.
        on_stage: called as ``(stage, "start" | "done" | "skip", seconds)``.
        progress: ``progress(kind, label, total)`` returns the progress callback of one piece of
            work: kind ``data`` -> ``(stage, done, total)``, ``train`` -> ``(done, total,
            metrics)``, ``search`` -> ``(snapshot)``, ``predict`` -> ``(case, done, total)``.
        accelerated: train, score and predict with the fast layers swapped in (``accelerate``).
        governor: fits the threads of the training this process runs to the cores other jobs
            leave free (``ThreadGovernor``). Both belong to the process: the command decides.
    """

    dataset_dir: Path
    run_dir: Path
    config: RunConfig | None = None
    budget: float | None = None
    search: SearchMode | None = None
    workers: int = 1
    gpus: int = 0
    storage: str | None = None
    grace_period: int = 600
    architecture: Path | None = None
    folds: tuple[int, ...] | None = None
    accept_changed_data: bool = False
    on_stage: Callable[[str, str, float], None] | None = None
    progress: Callable[[str, str, int | None], Callable[..., None]] | None = None
    accelerated: bool = False
    governor: ThreadGovernor | None = None

    # --- bookkeeping -----------------------------------------------------------------------

    @property
    def run_config(self) -> RunConfig:
        """The configuration (``config``, or the plan ``run`` made)."""
        assert self.config is not None, "the run is planned in Pipeline.run"
        return self.config

    @property
    def fold_ids(self) -> tuple[int, ...]:
        """The folds this call trains."""
        return self.run_config.training.folds if self.folds is None else self.folds

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    def state(self) -> RunState:
        try:
            return RunState.read(self.folder.pipeline_state)
        except RunStateError as error:
            raise PipelineError(str(error)) from None

    def _stages(self) -> dict[str, Callable[[], StageResult]]:
        return {
            "check": self.stage_check,
            "preprocess": self.stage_preprocess,
            "coarse": self.stage_coarse,
            "fine": self.stage_fine,
            "scale": self.stage_scale,
            "train": self.stage_train,
            "postprocess": self.stage_postprocess,
            "predict": self.stage_predict,
            "evaluate": self.stage_evaluate,
            "report": self.stage_report,
        }

    def run(self, stages: Sequence[str] = DEFAULT_STAGES) -> RunState:
        """Run ``stages`` (skipping those done before); returns the run's state.

        Holds the run folder's lock for the whole run: a second ``c2fnas run`` (or any command
        writing into the folder) is refused with ``FolderBusy``, naming this process, rather
        than both rewriting the same files.
        """
        with folder_lock(self.folder.lock):
            return self._run(stages)

    def _run(self, stages: Sequence[str]) -> RunState:
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise PipelineError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        planned = self._plan() if self.config is None else None
        if self.search is not None and self.search != self.run_config.search.mode:
            self.config = self.run_config.with_fields("search", mode=self.search)
        bad_folds = sorted(set(self.fold_ids) - set(range(NUM_FOLDS)))
        if bad_folds or not self.fold_ids:
            raise PipelineError(f"folds {bad_folds or '(none)'}: choose from 0..{NUM_FOLDS - 1}")
        self._check_dataset()
        self._check_sources()
        self._save_config()
        if planned is not None:
            state = self.state().with_planned(planned, self.budget)
            state.write(self.folder.pipeline_state)
        self._save_architecture()
        skipped = self._searched_elsewhere()
        calls = self._stages()
        ran = False
        for stage in STAGES:
            if stage not in stages or stage in skipped:
                continue
            if not ran and self._done(stage):
                self._notify(stage, "skip", 0.0)
                continue
            self._notify(stage, "start", 0.0)
            # the files as preprocessing finds them: one edited meanwhile counts as changed
            sources = self._source_stamps() if stage == "preprocess" else None
            start = time.perf_counter()
            try:
                result = calls[stage]()
            except BaseException:  # a signal or an error: the time was spent all the same
                stopped = self.state().with_interrupted(stage, time.perf_counter() - start)
                stopped.write(self.folder.pipeline_state)
                raise
            seconds = time.perf_counter() - start
            state = self.state().with_stage(stage, seconds, result)
            if sources is not None:
                state = state.with_sources(sources)
            state.write(self.folder.pipeline_state)
            self._notify(stage, "done", seconds)
            # what follows was made from this stage's old outputs: make it again
            ran = stage not in ("check", "report")
        return self.state()

    def _plan(self) -> dict[str, float] | None:
        """Set ``config`` to the run folder's plan, or to a new one (written there); returns the
        new plan's estimated seconds per part (None for a plan made before)."""
        path = self.folder.plan_config
        if path.is_file():
            logger.info("using the plan made before: %s", path)
            self.config = load_config("paper", path)
            refits = self.state().refits
            if refits:
                logger.info("training %s", refits[-1].summary())
                self.config = self.config.with_fields("training", **refits[-1].training)
            if self.search is not None and self.search != self.config.search.mode:
                raise PipelineError(
                    f"{path} plans --search {self.config.search.mode}, not {self.search}: rerun "
                    "without --search to resume it, or use a new run folder"
                )
            return None
        try:
            given = Architecture.load(self.architecture) if self.architecture else None
            plan = plan_run(
                self.dataset_dir, self.run_dir, self.budget, given, gpus=self.gpus,
                folds=self.folds, progress=self._view("data", "plan"), search=self.search,
            )  # fmt: skip
        except (ValueError, OSError) as error:  # PlanError, BudgetError, DatasetError
            raise PipelineError(f"plan: {error}") from None
        plan.write(self.run_dir)
        self.config = plan.config
        return dict(plan.seconds)

    def _done(self, stage: str) -> bool:
        state = self.state()
        if stage == "report" or stage not in state.stages:
            return False
        trained = state.result("train", TrainResult)
        if stage != "train" or trained is None:
            return True
        # done for the folds asked for now? (older runs trained all five)
        return set(self.fold_ids) <= set(trained.folds or range(NUM_FOLDS))

    def _view(self, kind: str, label: str, total: int | None = None) -> Callable[..., None] | None:
        return self.progress(kind, label, total) if self.progress is not None else None

    def _notify(self, stage: str, event: str, seconds: float) -> None:
        logger.info("stage %s: %s", stage, event)
        if self.on_stage is not None:
            self.on_stage(stage, event, seconds)

    def _recorded_dataset(self, state: RunState) -> DatasetIdentity | None:
        if state.dataset is not None:
            return state.dataset
        # Run folders from before the record: preprocess's copy of dataset.json names its source.
        copy = self.folder.dataset_copy
        try:
            description = json.loads(copy.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise PipelineError(f"{copy}: unreadable ({error}); use a new run folder") from None
        return DatasetIdentity(
            path=description.get("source", "?"),
            cases=len(description.get("training", [])),
            sha256=description_digest(description),
        )

    def _check_dataset(self) -> None:
        """Refuse a run folder whose finished stages belong to another dataset; record this one."""
        if self.run_dir.resolve() == self.dataset_dir.resolve():
            # the run writes its own dataset.json (with "source") and would replace the user's
            raise PipelineError(f"{self.run_dir}: is the dataset folder; choose another run folder")
        state = self.state()
        current = dataset_identity(self.dataset_dir)
        recorded = self._recorded_dataset(state)
        if state.stages and recorded is not None and recorded.sha256 != current.sha256:
            raise PipelineError(
                f"{self.run_dir} holds the run of the dataset {recorded.path} "
                f"({recorded.cases} training cases, dataset.json sha256 "
                f"{recorded.sha256[:12]}); {current.path} has {current.cases} training "
                f"cases, sha256 {current.sha256[:12]}. Use a new run folder for another "
                "dataset or a changed dataset.json"
            )
        if recorded is not None and recorded.path != current.path:
            logger.info("%s: the dataset moved to %s", recorded.path, current.path)
        if state.dataset != current:
            state.with_dataset(current).write(self.folder.pipeline_state)

    def _source_stamps(self) -> dict[str, dict[str, Any]]:
        """Size and mtime of each training case's files (``c2fnas.data.fingerprint.stamps``)."""
        return {case.case_id: stamps(case) for case in read_dataset(self.dataset_dir).training}

    def _check_sources(self) -> None:
        """Compare each training case's files with their stamps when preprocessed (recorded in
        ``pipeline.json``; for older run folders, in the cache's ``<case>.json``).

        A changed file before anything was made from the cache: ``check`` and ``preprocess``
        run again (preprocessing redoes the changed cases alone). After: refused, naming the
        files, unless ``accept_changed_data`` (then the files as they are now are recorded).
        """
        state = self.state()
        if "preprocess" not in state.stages:
            return
        dataset = read_dataset(self.dataset_dir)
        recorded = state.sources
        if recorded is None:
            recorded = {}
            for case in dataset.training:
                with contextlib.suppress(cache.CacheError):
                    case_stamps = cache.read_properties(self.run_dir, case.case_id).get("stamps")
                    if isinstance(case_stamps, dict):
                        recorded[case.case_id] = case_stamps
        changed = [
            str(path)
            for case in dataset.training
            if case.case_id in recorded
            for path in changed_files(case, dict(recorded[case.case_id]))
        ]
        if not changed:
            return
        made = [stage for stage in state.stages if stage not in ("check", "preprocess")]
        if not made:
            logger.info("%d source file(s) changed since preprocessed: preprocessing again",
                        len(changed))  # fmt: skip
            state.without_stages("check", "preprocess").write(self.folder.pipeline_state)
            return
        if self.accept_changed_data:
            logger.warning("keeping the results of %s although %d source file(s) changed: %s",
                           ", ".join(made), len(changed), ", ".join(changed[:10]))  # fmt: skip
            state.with_sources(self._source_stamps()).write(self.folder.pipeline_state)
            return
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" * (len(changed) > 10))
        raise PipelineError(
            f"{len(changed)} source file(s) changed after {self.run_dir} preprocessed them (size "
            f"or modification time differ): {shown}. Its stages {', '.join(made)} were made "
            "from the old files. Use a new run folder to run on the changed data; if their "
            "contents are unchanged (copied without their times), rerun with "
            "--accept-changed-data to keep the results"
        )

    def _save_architecture(self) -> None:
        """Copy the given architecture into the run folder; refuse another one on a rerun."""
        copy = self.folder.given_architecture
        if self.architecture is None:
            if copy.is_file():
                raise PipelineError(
                    f"{self.run_dir} trains the given architecture {copy}; pass --arch {copy} "
                    "to resume it, or use a new run folder for a search"
                )
            return
        try:
            given = Architecture.load(self.architecture)
        except (OSError, ValueError) as error:
            raise PipelineError(f"{self.architecture}: {error}") from None
        if copy.is_file() and Architecture.load(copy) != given:
            raise PipelineError(
                f"{self.run_dir} was started with the architecture in {copy}, not the one in "
                f"{self.architecture}; use a new run folder for another architecture"
            )
        if "coarse" in self.state().stages:
            raise PipelineError(
                f"{self.run_dir} holds a search; use a new run folder to train a given architecture"
            )
        if not copy.is_file():
            write_text_atomic(copy, given.to_json())

    def _save_config(self) -> None:
        path = self.folder.config
        text = self.run_config.to_yaml()
        changed = self._changed_settings(path) if path.is_file() else []
        finished = self.state().stages
        if changed and any(stage not in ("check", "preprocess") for stage in finished):
            raise PipelineError(
                f"{path}: this run was started with another configuration ("
                f"{'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); use the "
                "same preset, --config and --search to resume, or a new run folder"
            )
        path.write_text(text)

    def _changed_settings(self, path: Path) -> list[str]:
        """The settings in which ``path`` differs from this run's configuration (``section.name
        old -> new``): compared by value, so a file written before a setting was added (and
        holds its default) still matches."""
        try:
            saved = load_config("paper", path).model_dump(mode="json")
        except ValueError as error:  # ConfigError: unreadable, or a setting not known here
            return [f"unreadable: {error}"]
        current = self.run_config.model_dump(mode="json")
        return [
            f"{section}.{name} {value} -> {current[section][name]}"
            for section, values in saved.items()
            for name, value in values.items()
            if current[section][name] != value
        ]

    # --- stages ----------------------------------------------------------------------------

    def stage_check(self) -> CheckResult:
        report = check_dataset(self.dataset_dir, progress=self._view("data", "check"))
        for case in report.cases:
            for warning in case.warnings:
                logger.warning("check: %s: %s", case.case_id, warning)
        if not report.ok:
            problems = list(report.problems) + [
                f"{case.case_id}: {'; '.join(case.problems)}" for case in report.bad_cases
            ]
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise PipelineError(
                f"check: {self.dataset_dir} has problems (run `c2fnas data check` for the table):"
                f"\n  {shown}{more}"
            )
        return CheckResult(cases=len(report.cases))

    def stage_preprocess(self) -> PreprocessResult:
        summary = preprocess_dataset(
            self.dataset_dir, self.run_dir, self.run_config.data.spacing,
            workers=max(1, self.run_config.data.workers),
            progress=self._view("data", "preprocess"),
        )  # fmt: skip
        return PreprocessResult(cases=len(summary.written) + len(summary.skipped))

    def stage_coarse(self) -> SearchResult:
        search = self.run_config.search
        snapshot = coarse_stage(
            self.run_dir, self.run_config, storage=self.storage, workers=self.workers,
            gpus=self.gpus, grace_period=self.grace_period,
            on_progress=self._view("search", "coarse search", search.coarse_networks),
            accelerated=self.accelerated,
        )  # fmt: skip
        assert snapshot is not None, "c2fnas run is not started under torchrun"
        if snapshot.best is None:
            trials = self.folder.coarse.trials_csv
            raise PipelineError(f"coarse: no candidate finished; see {trials}")
        return SearchResult(evaluated=snapshot.evaluated, best_dice=snapshot.best.score)

    def stage_fine(self) -> SearchResult:
        transferred = None  # the coarse stage's best
        if self.run_config.search.mode == "fine":
            transferred = Architecture.coarse(C2FNAS_PANC.levels, self.run_config.search.width)
        snapshot = fine_stage(
            self.run_dir, self.run_config, topology=transferred, storage=self.storage,
            workers=self.workers, gpus=self.gpus, grace_period=self.grace_period,
            supernet_progress=self._view("train", "supernet"),
            on_progress=self._view("search", "fine search", self.run_config.search.fine_candidates),
            accelerated=self.accelerated, governor=self.governor,
        )  # fmt: skip
        assert snapshot is not None, "c2fnas run is not started under torchrun"
        if snapshot.best is None:
            candidates = self.folder.fine.candidates_csv
            raise PipelineError(f"fine: no colouring was scored; see {candidates}")
        return SearchResult(evaluated=snapshot.evaluated, best_dice=snapshot.best.score)

    def _searched_elsewhere(self) -> tuple[str, ...]:
        """The search stages this run leaves out: both with a given architecture or under
        ``search.mode: none``, the coarse one under ``fine`` (C2FNAS-Panc's topology)."""
        if self.architecture is not None or self.run_config.search.mode == "none":
            return SEARCH_STAGES
        return ("coarse",) if self.run_config.search.mode == "fine" else ()

    def final_architecture(self) -> Architecture:
        width = self.run_config.search.width  # the run's width
        if self.architecture is not None:
            return Architecture.load(self.folder.given_architecture).with_width(width)
        if self.run_config.search.mode == "none":
            return C2FNAS_PANC.with_width(width)
        return final_architecture(self.run_dir)

    def stage_scale(self) -> ScaleResult:
        rows = scale_stage(
            self.run_dir, self.run_config, architecture=self.final_architecture(),
            accelerated=self.accelerated, governor=self.governor,
        )  # fmt: skip
        return ScaleResult(widths=len(rows))

    def stage_train(self) -> TrainResult:
        architecture = self.final_architecture()
        folds = sorted(set(self.fold_ids) | set(self.trained_folds()))
        started = time.perf_counter()
        finished: list[FitResult] = []
        for left, fold in zip(range(len(folds), 0, -1), folds, strict=True):
            saved = self.folder.fold(fold)
            if latest_checkpoint(saved.checkpoints) is not None and saved.config.is_file():
                config = read_config(saved.config)  # started before: its schedule, as it was
            else:
                if finished:
                    spent = time.perf_counter() - started
                    self.refit_later(fold, left, finished, spent)
                config = self.run_config
            result = train(
                architecture, self.run_dir, fold, config, resume=True,
                progress=self._view("train", f"fold {fold}"), accelerated=self.accelerated,
                governor=self.governor,
                reschedule=self.reschedule(len(folds)) if fold == folds[0] else None,
            )  # fmt: skip
            finished.append(result)
        dice = tuple(result.best_mean for result in finished)
        return TrainResult(folds=tuple(folds), fold_dice=dice)

    def reschedule(self, folds: int) -> Reschedule | None:
        """The re-fit of the training's schedule for the first fold to train: under a budget,
        once ``REFIT_AFTER`` of its iterations are done. Each of the
        ``folds`` folds then gets an equal share of what the budget's planned part
        (``SAFETY``) leaves after the finished stages and the planned prediction, at the
        measured step and validation (``refit_training``); the record goes to
        ``pipeline.json``, the configuration to ``config.yaml``. None when there is nothing to
        re-fit (no budget, re-fitted before, a fold already trained)."""
        state = self.state()
        if state.budget is None or state.planned is None or state.refits:
            return None
        if self.trained_folds():
            return None

        def refit(done: int, timings: Timings) -> RunConfig | None:
            training = self.run_config.training
            if done < REFIT_AFTER * training.iterations:
                return None
            state = self.state()
            seconds = self._share_per_fold(state, 0.0, folds)
            refitted = refit_training(
                seconds, timings.step, timings.validation, done + training.validate_every
            )
            self._apply_refit(state, Refit(
                at_iteration=done, step=round(timings.step, 4),
                validation=round(timings.validation, 4), seconds=round(seconds, 1),
                planned_iterations=training.iterations, training=refitted.config_fields(),
            ))  # fmt: skip
            return self.run_config

        return refit

    def refit_later(
        self, fold: int, left: int, finished: Sequence[FitResult], spent: float
    ) -> None:
        """Before ``fold`` starts, under a budget: re-fit the schedule of it and the other folds
        still to train (``left`` with it) to the step the last of the ``finished`` folds
        measured over all its iterations (``finished_step``, at the first re-fit's validation
        time): the machine's pace now, which drifts over hours. Each gets
        an equal share of what the budget's planned part (``SAFETY``) leaves after the finished
        stages, the ``spent`` seconds of this stage (its stopped attempts' too, and at least
        the finished folds' own seconds) and the planned prediction, but never fewer
        iterations than the shorter of ``MIN_LATE_FOLD_ITERATIONS`` and the current schedule: a late
        fold kept short by an overrun is still worth its vote.
        Recorded in ``pipeline.json`` and written to ``config.yaml``; nothing without a budget,
        without the first re-fit, or when the stage finished before (folds added later)."""
        state = self.state()
        if state.budget is None or state.planned is None or not state.refits:
            return
        if "train" in state.stages:
            return
        training = self.run_config.training
        validation = state.refits[-1].validation
        # the last fold, not all of them: over 3 h on a 2-core Intel Xeon folds 0-2 took
        # 0.134-0.138 s an iteration (validations included), fold 3 0.142 and fold 4 0.151 s,
        # while the average of the folds finished read 0.131 and 0.132 s a step: the last fold
        # overran its share by 3 minutes
        # (benchmarks/results/hippocampus_run_panc_3h_xeon.json)
        last = finished[-1]
        step = finished_step(
            last.seconds, last.iterations, len(last.history.get("dice", ())), validation
        )
        # a start killed outright (SIGKILL, the OOM killer) recorded no interrupted time: the
        # finished folds' own seconds (from their checkpoints, over all starts) bound it below
        spent = max(
            spent + state.interrupted.get("train", 0.0), sum(result.seconds for result in finished)
        )
        seconds = self._share_per_fold(state, spent, left)
        earliest = min(training.iterations, MIN_LATE_FOLD_ITERATIONS)
        refitted = refit_training(seconds, step, validation, earliest)
        self._apply_refit(state, Refit(
            at_iteration=0, step=round(step, 4), validation=validation, seconds=round(seconds, 1),
            planned_iterations=training.iterations, training=refitted.config_fields(),
            before_fold=fold,
        ))  # fmt: skip

    @staticmethod
    def _share_per_fold(state: RunState, spent: float, folds: int) -> float:
        """Each of ``folds`` folds' share of the budget's planned part (``SAFETY``) less the
        finished stages, ``spent`` seconds more and the planned prediction."""
        assert state.budget is not None and state.planned is not None, "not a budgeted run"
        prediction = state.planned.get("prediction", 0.0)
        return (SAFETY * state.budget - state.seconds - spent - prediction) / folds

    def _apply_refit(self, state: RunState, record: Refit) -> None:
        """Train ``record``'s schedule from now on: ``config.yaml``, and ``pipeline.json``'s
        re-fits (after ``state``'s)."""
        self.config = self.run_config.with_fields("training", **record.training)
        write_text_atomic(self.folder.config, self.run_config.to_yaml())
        state.with_refit(record).write(self.folder.pipeline_state)
        logger.info("training %s", record.summary())

    def trained_folds(self) -> list[int]:
        """The folds whose training finished (the ensemble's members)."""
        trained = self.state().result("train", TrainResult)
        if trained is None:
            return []
        return list(trained.folds or range(NUM_FOLDS))  # older runs trained all five

    @property
    def test_images(self) -> Path:
        return self.dataset_dir / TEST_IMAGES

    def stage_postprocess(self) -> PostprocessResult:
        training = self.run_config.training
        pairs = predict_out_of_fold(
            self.run_dir, self.dataset_dir, self.trained_folds(), training.stride,
            training.precision, training.tta, self._view("predict", "out-of-fold"),
            self.accelerated,
        )  # fmt: skip
        labels = sorted(Plan.load(self.run_dir).labels)[1:]
        chosen = choose_from_files(pairs, labels, self.folder.postprocessing)
        return PostprocessResult(
            largest_component=tuple(chosen.largest_component), cases=len(pairs)
        )

    def stage_predict(self) -> PredictResult:
        if not self.test_images.is_dir() or not image_files_in(self.test_images):
            logger.info("no images in %s: nothing to predict", self.test_images)
            return PredictResult(cases=0)
        models = [self.folder.fold(fold).root for fold in self.trained_folds()]
        summary = predict_folder(
            models, self.test_images, self.folder.predictions, ensemble="vote",
            stride=self.run_config.training.stride, precision=self.run_config.training.precision,
            progress=self._view("predict", "predict"), tta=self.run_config.training.tta,
            postprocess="auto" if self.folder.postprocessing.is_file() else "none",
            accelerated=self.accelerated,
        )  # fmt: skip
        if summary.failed:
            failed = "; ".join(f"{name}: {reason}" for name, reason in summary.failed.items())
            raise PipelineError(f"predict: {len(summary.failed)} case(s) failed: {failed}")
        return PredictResult(cases=len(summary.written))

    def stage_evaluate(self) -> EvaluateResult:
        labels = self.dataset_dir / "labelsTs"
        predictions = self.folder.predictions
        if not labels.is_dir() or not predictions.is_dir():
            logger.info("no labelsTs or no predictions: nothing to evaluate")
            return EvaluateResult(evaluated=False)
        scores = evaluate_folders(predictions, labels)
        summary = summarize(scores)
        write_csv(scores, self.folder.evaluation_cases)
        write_summary(summary, self.folder.evaluation_summary)
        return EvaluateResult(evaluated=True, mean_dice=summary["mean_dice"])  # type: ignore[arg-type]

    def stage_report(self) -> ReportResult:
        paths = write_report(self.run_dir)
        return ReportResult(files=tuple(str(path) for path in paths))
