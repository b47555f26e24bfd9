"""Figures that show an architecture (paper Fig. 5 style)."""

from __future__ import annotations

from pathlib import Path

from c2fnas.space import Architecture

# the paper's colours: red 2D, green 3D, blue P3D
OP_COLOURS = {"2d": "#d62728", "3d": "#2ca02c", "p3d": "#1f77b4"}


def plot_architecture(architecture: Architecture, path: str | Path, caption: str = "") -> None:
    """Draw cells by position (x) and level (y, deeper = lower), coloured by op.

    Solid edges feed each cell from the previous node; dashed arcs are second inputs (the
    previous-previous cell at the same level, or the encoder skip after an up move).
    """
    # here, not at the top: the command line imports this module when it starts
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    node_levels = (0, *architecture.levels)
    figure = Figure(figsize=(10, 3.6))
    axes = figure.subplots()
    for cell in architecture.wiring:
        previous = cell.inputs[0]
        axes.plot(
            [previous, cell.cell], [-node_levels[previous], -cell.level], color="0.35", zorder=1
        )
        for source in cell.inputs[1:]:
            # flatter arcs for longer skips keep them inside the axes
            bend = max(0.12, 0.6 / (cell.cell - source))
            axes.annotate(
                "",
                xy=(cell.cell, -cell.level),
                xytext=(source, -node_levels[source]),
                arrowprops={
                    "arrowstyle": "->",
                    "linestyle": "--",
                    "color": "0.5",
                    "connectionstyle": f"arc3,rad=-{bend:.3f}",
                    "shrinkA": 8,
                    "shrinkB": 8,
                },
                zorder=1,
            )
    axes.scatter([0], [0], s=260, marker="s", color="0.2", zorder=2)
    axes.annotate("stem", (0, 0), textcoords="offset points", xytext=(0, 12), ha="center")
    for cell in architecture.wiring:
        op = architecture.ops[cell.cell - 1]
        axes.scatter([cell.cell], [-cell.level], s=300, color=OP_COLOURS[op], zorder=2)
        axes.annotate(
            str(cell.cell),
            (cell.cell, -cell.level),
            ha="center",
            va="center",
            color="white",
            fontsize=8,
            zorder=3,
        )
    last = len(architecture.levels)
    axes.plot([last, last + 1], [0, 0], color="0.35", zorder=1)
    axes.scatter([last + 1], [0], s=260, marker="s", color="0.2", zorder=2)
    axes.annotate("head", (last + 1, 0), textcoords="offset points", xytext=(0, 12), ha="center")
    axes.set_yticks(
        [-level for level in range(4)],
        [
            f"level {level}\n{architecture.channels(level)} ch, 1/{2 ** (level + 1)}"
            for level in range(4)
        ],
    )
    axes.set_xticks(range(last + 2), ["stem", *map(str, range(1, last + 1)), "head"])
    axes.set_ylim(-3.6, 1.0)
    axes.set_xlim(-0.6, last + 1.6)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour, markersize=10, label=op.upper())
        for op, colour in OP_COLOURS.items()
    ]
    handles.append(Line2D([], [], linestyle="--", color="0.5", label="second input"))
    axes.legend(handles=handles, loc="lower left", ncols=4, frameon=False, fontsize=8)
    axes.set_title(architecture.name or "architecture")
    if caption:
        figure.text(0.5, 0.01, caption, ha="center", fontsize=9)
    figure.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    figure.savefig(path, dpi=150)
