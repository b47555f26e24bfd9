"""What a search leaves in the run folder: trials.csv, best_topology.json, search.png.

All files are written atomically (temporary file, then ``os.replace``), so a reader, or a worker
killed mid-write, never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from c2fnas.files.atomic import replacing, write_text_atomic
from c2fnas.files.run_folder import CoarseFolder
from c2fnas.space import Architecture

if TYPE_CHECKING:  # the command line shows these tables without loading optuna
    from c2fnas.search.store import Record, Snapshot

CSV_COLUMNS = (
    "trial",
    "topology",
    "cluster",
    "dice",
    "iterations",
    "seconds",
    "state",
    "worker",
    "failure",
)


def code_text(code: tuple[int, ...] | None) -> str:
    """A topology code as ``0-0-1-1-2-3-2-2-1-0-0-0`` (empty when unknown)."""
    return "-".join(str(level) for level in code) if code else ""


def write_trials_csv(
    snapshot: Snapshot,
    path: Path,
    candidate: str = "topology",
    describe: Callable[[tuple[int, ...] | None], str] = code_text,
) -> None:
    """One row per trial, by trial number; ``dice`` is the mean validation Dice when scored.

    ``candidate`` names the column ``describe`` fills (the fine stage writes its colourings).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([candidate if column == "topology" else column for column in CSV_COLUMNS])
    for record in snapshot.records:
        writer.writerow(
            [
                record.number,
                describe(record.code),
                "" if record.cluster is None else record.cluster,
                "" if record.score is None else f"{record.score:.6f}",
                "" if record.iterations is None else record.iterations,
                "" if record.seconds is None else f"{record.seconds:.1f}",
                record.state,
                record.worker,
                record.failure,
            ]
        )
    write_text_atomic(path, buffer.getvalue())


def write_best_topology(snapshot: Snapshot, path: Path, width: float = 1.0) -> Architecture | None:
    """The best scored topology as an ``Architecture`` with ``3d`` in every cell."""
    best = snapshot.best
    if best is None or best.code is None:
        return None
    architecture = Architecture(
        levels=best.code,
        ops=Architecture.coarse(best.code).ops,
        width=width,
        name=f"coarse-best-trial-{best.number}",
    )
    write_text_atomic(path, architecture.to_json())
    return architecture


def evaluated_in_order(snapshot: Snapshot) -> list[Record]:
    """Scored, failed and pruned candidates in the order they finished."""
    done = [r for r in snapshot.records if r.state in ("finished", "failed", "pruned") and r.code]
    return sorted(done, key=lambda r: (r.completed_at is None, r.completed_at, r.number))


def plot_search(snapshot: Snapshot, path: Path, clusters: int) -> None:
    """Paper Fig. 4: the share of evaluated networks per cluster against the number evaluated,
    next to the best Dice so far."""
    from matplotlib.figure import Figure  # here: worker processes start without matplotlib

    records = evaluated_in_order(snapshot)
    counts = [[0] * clusters]
    best, best_so_far = float("nan"), []
    for record in records:
        row = list(counts[-1])
        if record.cluster is not None and 0 <= record.cluster < clusters:
            row[record.cluster] += 1
        counts.append(row)
        if record.score is not None and not record.score <= best:
            best = record.score
        best_so_far.append(best)
    evaluated = list(range(1, len(records) + 1))
    shares = [[row[k] / max(1, sum(row)) for row in counts[1:]] for k in range(clusters)]

    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    if records:
        left.stackplot(evaluated, shares, labels=[f"cluster {k}" for k in range(clusters)])
        right.plot(evaluated, best_so_far, marker=".")
        left.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    left.set(xlabel="networks evaluated", ylabel="share per cluster", ylim=(0, 1))
    right.set(xlabel="networks evaluated", ylabel="best validation Dice so far")
    right.grid(alpha=0.3)
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")


def write_outputs(snapshot: Snapshot, folder: CoarseFolder, clusters: int) -> Architecture | None:
    """Refresh every output of the coarse stage from the trial store's current state."""
    write_trials_csv(snapshot, folder.trials_csv)
    plot_search(snapshot, folder.plot, clusters)
    return write_best_topology(snapshot, folder.best_topology)


def progress_table(
    snapshot: Snapshot,
    budget: int,
    last: int = 12,
    stage: str = "coarse",
    describe: Callable[[tuple[int, ...] | None], str] = code_text,
) -> Table:
    """A rich table of the latest finished candidates and the best so far (for the CLI).

    ``describe`` shows a candidate's code (a topology by default; the fine stage's colourings).
    """
    best = snapshot.best
    title = (
        f"{stage} search: {snapshot.evaluated}/{budget} evaluated, "
        f"{snapshot.count('running')} running"
    )
    if best is not None and best.score is not None:
        title += f", best Dice {best.score:.4f} (trial {best.number})"
    table = Table(title=title)
    candidate = "topology" if stage == "coarse" else "ops"
    for column in ("trial", candidate, "cluster", "Dice", "iterations", "time", "worker"):
        table.add_column(column, justify="left" if column in (candidate, "worker") else "right")
    for record in evaluated_in_order(snapshot)[-last:]:
        dice = f"{record.score:.4f}" if record.score is not None else record.state
        style = "bold green" if best is not None and record.number == best.number else None
        table.add_row(
            str(record.number),
            describe(record.code),
            "" if record.cluster is None else str(record.cluster),
            dice,
            "" if record.iterations is None else str(record.iterations),
            "" if record.seconds is None else f"{record.seconds:.0f} s",
            record.worker,
            style=style,
        )
    return table
