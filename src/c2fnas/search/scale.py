"""The third stage (paper Sec. 5.3): scale the width of the final architecture.

Each width multiplier of the grid (paper: 0.25 to 2.0 in steps of 0.25) is trained with the search
schedule on the search split and validated; ``RUN_DIR/scale/scaling.csv`` lists width,
parameters, MACs (per sample, at the configured patch) and Dice per class, and
``RUN_DIR/scale/scaling.png`` plots Dice against MACs. A rerun resumes the width in progress and
skips the finished ones (each width trains in its own resumable folder).

matplotlib is imported where the plot is drawn: nothing else of this stage needs it.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from c2fnas.accel.process import ThreadGovernor
from c2fnas.costs.profile import estimate_cost
from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.files.atomic import replacing, write_text_atomic
from c2fnas.files.run_folder import RunFolder, ScaleFolder
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture
from c2fnas.training.config import RunConfig
from c2fnas.training.run import train

logger = logging.getLogger(__name__)


def run_scaling(
    run_dir: Path,
    architecture: Architecture,
    config: RunConfig,
    widths: Sequence[float],
    on_width: Callable[[dict[str, Any]], None] | None = None,
    accelerated: bool = False,
    governor: ThreadGovernor | None = None,
) -> list[dict[str, Any]]:
    """Train every width, write the table and the plot after each one; returns the rows.
    ``accelerated`` and ``governor``: see ``c2fnas.training.run.train``."""
    if not widths or any(width <= 0 for width in widths):
        raise ValueError(f"widths must be positive multipliers, got {list(widths)}")
    plan = Plan.load(run_dir)
    search_config = config.for_search()
    class_names = [plan.labels[value] for value in sorted(plan.labels)[1:]]
    rows: list[dict[str, Any]] = []
    for width in widths:
        scaled = architecture.with_width(width)
        torch.manual_seed(search_config.training.seed)
        network = C2FNet(scaled, plan.in_channels, plan.num_classes)
        cost = estimate_cost(network, (1, plan.in_channels, *config.data.patch))
        result = train(
            scaled, run_dir, SEARCH_FOLD, search_config, RunFolder(run_dir).scale.width(width).root,
            resume=True, network=network, accelerated=accelerated, governor=governor,
        )  # fmt: skip
        row = {
            "width": width,
            "params": cost.params,
            "macs": cost.macs,
            "dice_mean": result.best_mean,
            **{
                f"dice_{name}": dice
                for name, dice in zip(class_names, result.best_dice, strict=True)
            },
        }
        rows.append(row)
        write_outputs(rows, RunFolder(run_dir).scale)
        if on_width is not None:
            on_width(row)
    return rows


def write_outputs(rows: Sequence[dict[str, Any]], folder: ScaleFolder) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(folder.table, buffer.getvalue())
    plot_scaling(rows, folder.plot)


def plot_scaling(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure  # here, not at the top: see the module docstring

    figure = Figure(figsize=(5.5, 4))
    axes = figure.subplots()
    macs = [row["macs"] / 1e9 for row in rows]
    axes.plot(macs, [row["dice_mean"] for row in rows], marker="o")
    for row, x in zip(rows, macs, strict=True):
        axes.annotate(f"x{row['width']:g}", (x, row["dice_mean"]), textcoords="offset points",
                      xytext=(4, 4), fontsize=8)  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("G MACs per sample")
    axes.set_ylabel("mean validation Dice")
    axes.set_title("width scaling")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=120)
