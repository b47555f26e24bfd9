"""``RUN_DIR/report.md`` and ``report.html``: what a run searched, trained and scored.

Everything is read back from the files the stages wrote, so a report can be rebuilt at any time
(``c2fnas run ... --stages report``) and shows whatever stages have finished.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import NUM_FOLDS
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.run_folder import RunFolder
from c2fnas.nn.profile import profile_architecture
from c2fnas.plots import plot_architecture
from c2fnas.space import Architecture
from c2fnas.training.config import read_config

Table = tuple[list[str], list[list[str]]]


PLANNED_PARTS = {
    "data": ("check", "preprocess"),
    "coarse": ("coarse",),
    "fine": ("fine",),
    "training": ("scale", "train"),
    "prediction": ("postprocess", "predict", "evaluate", "report"),
}
"""The parts of a plan's time estimate (``c2fnas.planning``) and the stages that spend it."""


def planned_against_spent(state: dict[str, Any]) -> list[tuple[str, float, float]]:
    """``(part, planned seconds, spent seconds)`` of a planned run (empty without a plan)."""
    planned = state.get("planned") or {}
    stages = state.get("stages", {})
    return [
        (part, float(planned.get(part, 0.0)),
         sum(float(stages.get(stage, {}).get("seconds", 0.0)) for stage in members))
        for part, members in PLANNED_PARTS.items()
        if part in planned
    ]  # fmt: skip


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

    def image(self, path: str, caption: str) -> None:
        self.blocks.append(("image", (path, caption)))

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
                path, caption = value
                lines += [f"![{caption}]({path})", ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "text":
                parts.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                    for row in rows
                )
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                path, caption = value
                parts.append(
                    f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
            "text-align:right}img{max-width:100%}"
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
    _ensemble(document, folder, plan)
    paths = [folder.report_markdown, folder.report_html]
    write_text_atomic(paths[0], document.markdown())
    write_text_atomic(paths[1], document.html())
    return paths


def _stage_times(document: Document, folder: RunFolder) -> None:
    state = _read_json(folder.pipeline_state) or {"stages": {}}
    rows = [[stage, _f(info.get("seconds"), 1)] for stage, info in state["stages"].items()]
    if rows:
        document.heading("Time per stage")
        total = sum(float(info.get("seconds", 0)) for info in state["stages"].values())
        document.table(["stage", "seconds"], [*rows, ["total", f"{total:.1f}"]])
    parts = planned_against_spent(state)
    if parts:
        document.heading("Planned against spent")
        planned, spent = sum(p for _, p, _ in parts), sum(s for _, _, s in parts)
        rows = [[part, f"{p / 60:.1f}", f"{s / 60:.1f}"] for part, p, s in parts]
        rows.append(["total", f"{planned / 60:.1f}", f"{spent / 60:.1f}"])
        document.table(["part", "planned (min)", "spent (min)"], rows)


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
    cost = profile_architecture(
        architecture, patch, plan.in_channels, plan.num_classes, timing=False
    )
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
    rows = []
    for fold in range(NUM_FOLDS):
        info = _read_json(folder.fold(fold).best / "model.json")
        if info is None:
            continue
        dice = info.get("dice") or []
        mean = sum(dice) / len(dice) if dice else None
        rows.append([str(fold), *(_f(value) for value in dice), _f(mean), str(info["iteration"])])
    if rows:
        document.heading("Final training: validation Dice per fold")
        document.table(["fold", *classes, "mean", "best iteration"], rows)


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
