"""``RUN_DIR/report.md`` and ``report.html``: what a run searched, trained and scored.

Everything is read back from the files the stages wrote, so a report can be rebuilt at any time
(``c2fnas run ... --stages report``) and shows whatever stages have finished: the time planned
against spent, the architecture and the search, each fold's training curves (from the history in
its latest checkpoint), the cases that scored worst out of fold and on the test set, and the
ensemble's scores. ``report.html`` embeds the training curves, so it can be read alone; the other
figures are files beside it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2fnas.costs.profile import profile_architecture
from c2fnas.data.io import image_files_in, load_label
from c2fnas.data.msd import DatasetError, case_id_of, read_dataset
from c2fnas.data.pipeline import cached_case_ids
from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import NUM_FOLDS, load_or_create
from c2fnas.evaluation.metrics import dice as dice_score
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.run_folder import RunFolder, TrainingFolder
from c2fnas.files.run_state import RunState
from c2fnas.inference.postprocess import Postprocessing
from c2fnas.plots import plot_architecture
from c2fnas.space import Architecture
from c2fnas.training.checkpoint import latest_checkpoint
from c2fnas.training.config import read_config
from c2fnas.training.report import RunLog

Table = tuple[list[str], list[list[str]]]


WORST_CASES = 15
"""Cases listed worst first in each per-case table; the files named beside it hold them all."""

_CODE = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(.+?)\*\*")


def inline_html(text: str) -> str:
    """The Markdown this report writes, as HTML: `code` and **bold**; the rest escaped.

    Everything is escaped first, so case ids or paths from the user's files stay text.
    """
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(lambda match: f"<code>{match.group(1)}</code>", escaped)
    return _STRONG.sub(lambda match: f"<strong>{match.group(1)}</strong>", escaped)


@dataclass
class Document:
    """A report as blocks, rendered to Markdown and to HTML from the same content."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, path: str, caption: str, png: bytes | None = None) -> None:
        """A figure linked at ``path``; ``png``, when given, is embedded in the HTML instead."""
        self.blocks.append(("image", (path, caption, png)))

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                lines += [f"## {value}", ""]
            elif kind == "text":
                lines += [value, ""]
            elif kind == "table":
                header, rows = value
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(row) + " |" for row in rows]
                lines.append("")
            else:
                path, caption, _ = value
                lines += [f"![{caption}]({path})", ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = [f"<h1>{inline_html(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{inline_html(value)}</h2>")
            elif kind == "text":
                parts.append(f"<p>{inline_html(value)}</p>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{inline_html(cell)}</th>" for cell in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{inline_html(cell)}</td>" for cell in row) + "</tr>"
                    for row in rows
                )
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                path, caption, png = value
                source = (
                    "data:image/png;base64," + base64.b64encode(png).decode()
                    if png is not None
                    else html.escape(path)
                )
                parts.append(
                    f'<figure><img src="{source}" alt="{html.escape(caption)}">'
                    f"<figcaption>{inline_html(caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:0.5em 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}"
            "code{background:#f3f3f3;padding:0 3px;border-radius:3px}"
            "img{max-width:100%}figcaption{color:#555;font-size:90%}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
        )


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _f(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def write_report(run_dir: Path) -> list[Path]:
    """Write ``report.md`` and ``report.html`` in ``run_dir``; returns both paths."""

    plan = Plan.load(run_dir)
    classes = [plan.labels[value] for value in sorted(plan.labels)[1:]]
    document = Document(f"C2FNAS run: {plan.dataset or run_dir.name}")
    document.text(f"Run folder `{run_dir}`; configuration in `config.yaml`.")
    folder = RunFolder(run_dir)
    _stage_times(document, folder)
    _architecture(document, folder, plan)
    _search(document, folder)
    _scaling(document, folder)
    _folds(document, folder, classes)
    _postprocessing(document, folder, plan)
    _out_of_fold_cases(document, folder, plan)
    _ensemble(document, folder, plan)
    paths = [folder.report_markdown, folder.report_html]
    write_text_atomic(paths[0], document.markdown())
    write_text_atomic(paths[1], document.html())
    return paths


def _stage_times(document: Document, folder: RunFolder) -> None:
    state = RunState.read(folder.pipeline_state)
    parts = state.planned_against_spent()
    if parts:
        document.heading("Time planned against spent")
        planned, spent = sum(p for _, p, _ in parts), sum(s for _, _, s in parts)
        rows = [[part, _minutes(p), _minutes(s), _ratio(s, p)] for part, p, s in parts]
        rows.append(["**total**", _minutes(planned), _minutes(spent), _ratio(spent, planned)])
        document.table(["part", "planned (min)", "spent (min)", "spent / planned"], rows)
        document.text(
            "Planned: the estimate of `plan.yaml` (`c2fnas plan`); spent: the stages' times "
            "in `pipeline.json`."
        )
    for refit in state.refits:
        document.text(f"Training {refit.summary()}.")
    rows = [[stage, _f(record.seconds, 1)] for stage, record in state.stages.items()]
    if rows:
        document.heading("Time per stage")
        document.table(["stage", "seconds"], [*rows, ["**total**", f"{state.seconds:.1f}"]])


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _ratio(spent: float, planned: float) -> str:
    return f"{spent / planned:.2f}" if planned > 0 else "-"


def _architecture(document: Document, folder: RunFolder, plan: Any) -> None:
    given = folder.given_architecture.is_file()
    path = folder.given_architecture if given else folder.fine.best_architecture
    if not path.is_file():
        return
    config = read_config(folder.config)
    architecture = Architecture.load(path)
    if given:  # the folds train it at the run's width (``search.width``), as ``c2fnas run`` does
        architecture = architecture.with_width(config.search.width)
    patch = tuple(config.data.patch)
    cost = profile_architecture(architecture, patch, plan.in_channels, plan.num_classes)
    caption = (
        f"{cost['params'] / 1e6:.3f} M parameters, {cost['macs'] / 1e9:.2f} G MACs per "
        f"{'x'.join(map(str, patch))} patch, width {architecture.width:g}"
    )
    plot_architecture(architecture, folder.architecture_figure, caption)
    document.heading("Architecture (given: no search)" if given else "Searched architecture")
    document.text(
        f"levels {list(architecture.levels)}, ops {list(architecture.ops)}; {caption}. "
        f"File: `{_relative(folder, path)}`."
    )
    document.image(
        _relative(folder, folder.architecture_figure),
        f"{'given' if given else 'searched'} architecture (red 2D, green 3D, blue P3D)",
    )


def _search(document: Document, folder: RunFolder) -> None:
    coarse = [r for r in _read_csv(folder.coarse.trials_csv) if r["state"] == "finished"]
    if coarse:
        best = max(coarse, key=lambda row: float(row["dice"]))
        document.heading("Coarse stage: topology search")
        document.text(
            f"{len(coarse)} topologies trained and scored; best {best['topology']} "
            f"(cluster {best['cluster']}) with validation Dice {_f(best['dice'])}."
        )
        document.image(
            _relative(folder, folder.coarse.plot),
            "share of networks per cluster; best Dice so far",
        )
    fine = [r for r in _read_csv(folder.fine.candidates_csv) if r["state"] == "finished"]
    if fine:
        best = max(fine, key=lambda row: float(row["dice"]))
        document.heading("Fine stage: op search")
        document.text(
            f"{len(fine)} colourings scored with the supernet's weights; best "
            f"[{best['ops']}] with supernet validation Dice {_f(best['dice'])}."
        )


def _scaling(document: Document, folder: RunFolder) -> None:
    rows = _read_csv(folder.scale.table)
    if not rows:
        return
    document.heading("Width scaling")
    header = list(rows[0])
    document.table(header, [[row[key] for key in header] for row in rows])
    document.image(_relative(folder, folder.scale.plot), "validation Dice against MACs")


def _folds(document: Document, folder: RunFolder, classes: list[str]) -> None:
    rows, curves = [], []
    for fold in range(NUM_FOLDS):
        training = folder.fold(fold)
        info = _read_json(training.best / "model.json")
        if info is None:
            continue
        dice = info.get("dice") or []
        mean = sum(dice) / len(dice) if dice else None
        history = _history(training)
        losses = history.get("loss", []) if history else []
        rows.append(
            [
                str(fold),
                *(_f(value) for value in dice),
                _f(mean),
                str(info["iteration"]),
                str(losses[-1][0]) if losses else "-",
                _f(_final_loss(losses)),
            ]
        )
        if history:
            curves.append((fold, training, history))
    if not rows:
        return
    document.heading("Final training: validation Dice per fold")
    document.table(["fold", *classes, "mean", "best iteration", "iterations", "final loss"], rows)
    document.text(
        "Final loss: the mean training loss (Dice + cross-entropy) of the last "
        f"{_LOSS_TAIL} iterations. The best model (`best/`) is the one the ensemble uses."
    )
    for fold, training, history in curves:
        document.heading(f"Fold {fold}: training curves")
        document.image(
            _relative(folder, training.progress_plot),
            f"fold {fold}: training loss (left) and validation Dice per class (right)",
            png=_curves_png(history, classes),
        )


_LOSS_TAIL = 50


def _final_loss(losses: list[list[float]]) -> float | None:
    tail = [entry[1] for entry in losses[-_LOSS_TAIL:]]
    return sum(tail) / len(tail) if tail else None


def _history(training: TrainingFolder) -> dict[str, Any] | None:
    """The loss and Dice history (``RunLog.history``) saved in the fold's latest checkpoint."""
    try:
        checkpoint = latest_checkpoint(training.checkpoints)
    except (OSError, ValueError):
        return None
    if checkpoint is None:
        return None
    state = _read_json(checkpoint / "state.json") or {}
    history = state.get("history")
    return history if isinstance(history, dict) else None


def _curves_png(history: dict[str, Any], classes: list[str]) -> bytes:
    """The figure of the fold's ``progress.png``, drawn from its complete history."""
    run_log = RunLog(Path("."), history, enabled=False, tensorboard=False, class_names=classes)
    figure = run_log.figure()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def _postprocessing(document: Document, folder: RunFolder, plan: Any) -> None:
    chosen = _read_json(folder.postprocessing)
    if chosen is None:
        return
    document.heading("Post-processing chosen on cross-validation")
    rows = []
    for label, evidence in chosen.get("classes", {}).items():
        rows.append(
            [
                f"{label} ({plan.labels.get(int(label), label)})",
                _f(evidence.get("dice")),
                _f(evidence.get("dice_largest_component")),
                "yes" if int(label) in chosen.get("largest_component", []) else "no",
                str(evidence.get("cases")),
            ]
        )
    document.table(
        ["class", "out-of-fold Dice", "largest component only", "applied", "cases"], rows
    )


def _out_of_fold_cases(document: Document, folder: RunFolder, plan: Any) -> None:
    """Every training case's Dice by the fold model that did not train on it, worst first."""
    predictions = _prediction_files(folder.crossval)
    if not predictions:
        return
    try:
        source = Path(json.loads(folder.dataset_copy.read_text())["source"])
        references = {case.case_id: case.label for case in read_dataset(source).training}
        splits = load_or_create(folder.root, cached_case_ids(folder.root))
    except (OSError, KeyError, ValueError, DatasetError) as error:
        document.heading("Out-of-fold Dice per case")
        document.text(f"Not scored: the dataset's labels could not be read ({error}).")
        return
    fold_of = {case_id: k for k, split in enumerate(splits) for case_id in split.val}
    chosen = Postprocessing.load(folder.postprocessing) if folder.postprocessing.is_file() else None
    labels = sorted(plan.labels)[1:]
    scores = []
    for case_id, path in predictions.items():
        reference_path = references.get(case_id)
        if reference_path is None:
            continue
        predicted, reference = load_label(path)[0], load_label(reference_path)[0]
        if chosen is not None:
            predicted = chosen.apply(predicted)
        dice = [dice_score(predicted == value, reference == value) for value in labels]
        scores.append((case_id, fold_of.get(case_id), dice))
    if not scores:
        return
    document.heading("Out-of-fold Dice per case, worst first")
    document.text(
        f"Each of the {len(scores)} training cases predicted by the fold model that validated on "
        "it (never by one that trained on it), in the image's own geometry"
        + (", after the chosen post-processing" if chosen is not None else "")
        + f"; predictions in `{_relative(folder, folder.crossval)}/`. "
        + _shown(len(scores))
    )
    classes = [plan.labels[value] for value in labels]
    rows = [
        [f"`{case_id}`", "-" if fold is None else str(fold), *map(_f, dice), _f(_mean(dice))]
        for case_id, fold, dice in sorted(scores, key=lambda score: _mean(score[2]))
    ]
    document.table(["case", "fold", *classes, "mean"], rows[:WORST_CASES])


def _test_cases(document: Document, folder: RunFolder, plan: Any) -> None:
    """The test cases' Dice of ``evaluation/cases.csv``, worst first."""
    by_case: dict[str, dict[int, float]] = {}
    for row in _read_csv(folder.evaluation_cases):
        by_case.setdefault(row["case"], {})[int(row["label"])] = float(row["dice"])
    if not by_case:
        return
    labels = sorted({label for scores in by_case.values() for label in scores})
    ordered = sorted(by_case.items(), key=lambda item: _mean(list(item[1].values())))
    document.heading("Test Dice per case, worst first")
    document.text(
        f"All {len(by_case)} cases with every score in "
        f"`{_relative(folder, folder.evaluation_cases)}`. " + _shown(len(by_case))
    )
    rows = [
        [f"`{case}`", *(_f(scores.get(label)) for label in labels),
         _f(_mean(list(scores.values())))]
        for case, scores in ordered
    ]  # fmt: skip
    classes = [plan.labels.get(label, str(label)) for label in labels]
    document.table(["case", *classes, "mean"], rows[:WORST_CASES])


def _prediction_files(folder: Path) -> dict[str, Path]:
    """Label maps in ``folder`` by case id (the file name without its image suffix)."""
    if not folder.is_dir():
        return {}
    return {case_id_of(path): path for path in image_files_in(folder)}


def _mean(values: list[float]) -> float:
    numbers = [value for value in values if not math.isnan(value)]
    return sum(numbers) / len(numbers) if numbers else math.nan


def _shown(count: int) -> str:
    return "All of them:" if count <= WORST_CASES else f"The {WORST_CASES} lowest by mean Dice:"


def _relative(folder: RunFolder, path: Path) -> str:
    """``path`` as the report links it: relative to the run folder, where the report lies."""
    return path.relative_to(folder.root).as_posix()


def _ensemble(document: Document, folder: RunFolder, plan: Any) -> None:
    summary = _read_json(folder.evaluation_summary)
    if summary is None:
        return
    members = sum((folder.fold(fold).best / "model.json").is_file() for fold in range(NUM_FOLDS))
    document.heading(f"Test set: ensemble of {members} fold(s) (majority vote)")
    rows = []
    for label, entry in summary["labels"].items():
        name = plan.labels.get(int(label), label)
        rows.append(
            [
                f"{label} ({name})",
                _f(entry.get("dice_mean")),
                _f(entry.get("dice_std")),
                _f(entry.get("hd95_mean"), 2),
                _f(entry.get("surface_dice_mean")),
                str(entry.get("cases")),
            ]
        )
    document.table(["class", "Dice", "Dice std", "HD95 (mm)", "surface Dice", "cases"], rows)
    document.text(f"Mean Dice over classes: {_f(summary.get('mean_dice'))}.")
    _test_cases(document, folder, plan)
