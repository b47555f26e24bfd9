"""c2fnas against nnU-Net v2 on the same Hippocampus cases, from the two benchmarks' records.

Reads, for each budget found, ``results/hippocampus_run_<kind>_<budget>.json`` (``hippocampus.py
--run-budget``: ``c2fnas run`` planned to the budget; its out-of-fold Dice per case in the source
geometry), ``..._<budget>_<tag>.json`` where they exist (``_folds0``: ``--folds 0``, one model
gets the whole budget, as nnU-Net's fold does; a CPU's name: the same budget on another machine)
and ``results/nnunet_peer_<budget>.json`` (``nnunet_peer.py``:
nnU-Net's ``3d_fullres`` trained for the budget per fold, its held-out cases scored by c2fnas's
evaluation). For every fold nnU-Net trained, both tools are compared on that fold's held-out
cases: each mean with a 95% bootstrap interval over the cases and the paired difference (c2fnas -
nnU-Net). Writes ``results/versus_nnunet.json`` and a figure of Dice against wall time on each
fold nnU-Net trained and each CPU kind, a line per tool through every budget recorded on that
CPU kind (a c2fnas run of more folds is scored on the fold's cases from its out-of-fold Dice;
``results/versus_nnunet.png``). Nothing is trained here.

Wall time: c2fnas's is its whole run (planning, preprocessing, every fold, prediction), summed
over its starts; nnU-Net's is its preprocessing plus, for each compared fold, the calibration,
the training and the prediction (its records time each phase). The records name their CPUs;
a pair measured on different CPU kinds is flagged, not compared.

Usage::

    .venv/bin/python benchmarks/versus_nnunet.py                  # every budget with both records
    .venv/bin/python benchmarks/versus_nnunet.py --kind panc      # c2fnas runs with --arch
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))
from search_study import interval_of_cases, paired_bootstrap  # noqa: E402

SHARED_PHASES = ("convert", "plan", "calibrate")
"""nnU-Net's phases that every fold's wall time includes (``score`` is c2fnas's evaluation)."""


def budget_of(path: Path, prefix: str) -> str:
    return path.stem.removeprefix(prefix)


def nnunet_seconds(record: dict[str, Any], fold: int) -> float:
    """Preprocessing, calibration, and the fold's training and prediction, less the time its
    process stood stopped from outside (``paused_seconds`` per phase, with ``paused_why``)."""
    own = (f"train_fold{fold}", f"predict_fold{fold}")
    paused = record.get("paused_seconds", {})
    return sum(
        seconds - paused.get(name, 0.0)
        for name, seconds in record["seconds_per_phase"].items()
        if name in SHARED_PHASES or name.startswith(own)
    )


def per_case_mean(row: dict[str, Any]) -> dict[str, float]:
    """An nnU-Net fold's Dice per held-out case, the mean over the classes."""
    return {case: float(np.mean(list(dice.values()))) for case, dice in row["dice"].items()}


def c2fnas_label(record: dict[str, Any]) -> str:
    """How the c2fnas run spent its budget: its folds."""
    folds = record["folds"]
    return f"{len(folds)} folds" if len(folds) > 1 else f"fold {folds[0]} only"


def machine_kind(record: dict[str, Any]) -> str:
    return " ".join([record["machine"]["cpu"], *record["machine"]["flags"]])


def machine_label(record: dict[str, Any]) -> str:
    """A CPU kind in a few words: its name and its widest vector and matrix units."""
    flags = record["machine"]["flags"]
    name = record["machine"]["cpu"].replace("(R)", "").replace(" Processor", "")
    units = ["AVX-512" if "avx512f" in flags else "AVX2", *["AMX"] * ("amx_bf16" in flags)]
    return f"{name}, {' + '.join(units)}"


def compare(c2fnas: dict[str, Any], nnunet: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per fold nnU-Net trained: both tools on that fold's held-out cases."""
    ours = (c2fnas.get("out_of_fold") or {}).get("per_case")
    rows = []
    for row in nnunet["results"]:
        theirs = per_case_mean(row)
        entry: dict[str, Any] = {
            "c2fnas_run": c2fnas_label(c2fnas),
            "fold": row["fold"],
            "cases": len(theirs),
            "nnunet": interval_of_cases(np.array(list(theirs.values()))),
            "nnunet_wall_seconds": round(nnunet_seconds(nnunet, row["fold"]), 1),
            "c2fnas_wall_seconds": c2fnas["wall_seconds"],
        }
        if ours is None:
            entry["c2fnas"] = None
            entry["why_not_compared"] = "the c2fnas record has no per-case out-of-fold Dice"
        elif missing := sorted(set(theirs) - set(ours)):
            entry["c2fnas"] = None
            entry["why_not_compared"] = f"c2fnas predicted {len(missing)} of these cases not"
        else:
            cases = sorted(theirs)
            a = np.array([ours[case] for case in cases])
            b = np.array([theirs[case] for case in cases])
            entry["c2fnas"] = interval_of_cases(a)
            entry["c2fnas_minus_nnunet"] = paired_bootstrap(a, b)
        rows.append(entry)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="panc", choices=["panc", "search"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"c2fnas_kind": args.kind, "budgets": {}}
    for path in sorted(args.results.glob("nnunet_peer_*.json")):
        budget = budget_of(path, "nnunet_peer_")
        stem = f"hippocampus_run_{args.kind}_{budget}"
        ours_paths = [
            args.results / f"{stem}.json",
            *sorted(args.results.glob(f"{stem}_*.json")),
        ]
        ours_paths = [ours for ours in ours_paths if ours.is_file()]
        if budget.endswith("_smoke") or not ours_paths:
            continue
        nnunet = json.loads(path.read_text())
        entry: dict[str, Any] = {"records": [path.name], "cpu": [nnunet["machine"]["cpu"]],
                                 "folds": [], "not_compared": []}  # fmt: skip
        for ours_path in ours_paths:
            c2fnas = json.loads(ours_path.read_text())
            entry["records"].append(ours_path.name)
            if machine_kind(c2fnas) != machine_kind(nnunet):
                entry["not_compared"].append(
                    f"{ours_path.name}: measured on another CPU kind ({machine_kind(c2fnas)})"
                )
            else:
                entry["folds"] += compare(c2fnas, nnunet)
        report["budgets"][budget] = entry
    report["curves"] = curves(args.results, args.kind)
    out = args.results / "versus_nnunet.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    show(report)
    figure(report, args.results / "versus_nnunet.png")


def curves(results: Path, kind: str) -> dict[str, list[dict[str, Any]]]:
    """Dice against wall time on each fold nnU-Net trained, per CPU kind: every c2fnas and
    nnU-Net record of any budget measured on that CPU kind, scored on the fold's held-out cases
    (a c2fnas run of more folds has them all in its out-of-fold Dice), so the figure has a line
    per tool."""
    nnunet = [
        json.loads(path.read_text())
        for path in sorted(results.glob("nnunet_peer_*.json"))
        if not path.stem.endswith("_smoke")
    ]
    prefix = f"hippocampus_run_{kind}_"
    ours = {
        budget_of(path, prefix): json.loads(path.read_text())
        for path in sorted(results.glob(f"{prefix}*.json"))
    }
    lines: dict[str, list[dict[str, Any]]] = {}
    for record in nnunet:
        for row in record["results"]:
            theirs = per_case_mean(row)
            line = lines.setdefault(f"fold {row['fold']} ({machine_label(record)})", [])
            line.append({
                "tool": "nnU-Net v2", "budget": record["budget"], "cases": len(theirs),
                "minutes": nnunet_seconds(record, row["fold"]) / 60,
                "dice": interval_of_cases(np.array(list(theirs.values()))),
            })  # fmt: skip
            for budget, run in ours.items():
                per_case = (run.get("out_of_fold") or {}).get("per_case") or {}
                if machine_kind(run) != machine_kind(record) or not set(theirs) <= set(per_case):
                    continue
                point = {
                    "tool": f"c2fnas ({c2fnas_label(run)})",
                    "budget": budget.split("_")[0],  # a fold tag shows in the tool's label,
                    # a CPU's in the panel's title
                    "cases": len(theirs),
                    "minutes": run["wall_seconds"] / 60,
                    "dice": interval_of_cases(np.array([per_case[c] for c in sorted(theirs)])),
                }
                if point not in line:  # two nnU-Net budgets meet the same c2fnas runs
                    line.append(point)
    return lines


def show(report: dict[str, Any]) -> None:
    table = Table(title="c2fnas against nnU-Net v2, same held-out cases (mean Dice [95%])")
    for column in ("budget", "c2fnas run", "fold", "cases", "c2fnas", "wall (min)", "nnU-Net",
                   "wall (min)", "c2fnas - nnU-Net"):  # fmt: skip
        table.add_column(column, justify="right")
    for budget, entry in report["budgets"].items():
        for reason in entry["not_compared"]:
            table.add_row(budget, "-", "-", "-", reason, "", "", "", "")
        for row in entry["folds"]:
            ours, theirs = row["c2fnas"], row["nnunet"]
            difference = row.get("c2fnas_minus_nnunet")
            table.add_row(
                budget, row["c2fnas_run"], str(row["fold"]), str(row["cases"]),
                _interval(ours) if ours else row["why_not_compared"],
                f"{row['c2fnas_wall_seconds'] / 60:.1f}", _interval(theirs),
                f"{row['nnunet_wall_seconds'] / 60:.1f}",
                _interval(difference, "difference", signed=True) if difference else "-",
            )  # fmt: skip
    Console(width=max(140, Console().width)).print(table)  # not cut to 80 columns in a log


def _interval(values: dict[str, float], key: str = "mean", signed: bool = False) -> str:
    form = "+.4f" if signed else ".4f"
    return f"{values[key]:{form}} [{values['low']:{form}}, {values['high']:{form}}]"


def figure(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = report["curves"]
    fig, axes = plt.subplots(1, max(1, len(lines)), figsize=(7 * max(1, len(lines)), 4.5))
    for ax, (fold, points) in zip(np.atleast_1d(axes), lines.items(), strict=False):
        tools = sorted({point["tool"].split(" (")[0] for point in points})
        for tool in tools:
            own = sorted(
                (point for point in points if point["tool"].startswith(tool)),
                key=lambda point: point["minutes"],
            )
            means = np.array([point["dice"]["mean"] for point in own])
            low = means - np.array([point["dice"]["low"] for point in own])
            high = np.array([point["dice"]["high"] for point in own]) - means
            minutes = [point["minutes"] for point in own]
            ax.errorbar(minutes, means, yerr=[low, high], marker="o", capsize=3, label=tool)
            for point, x, y in zip(own, minutes, means, strict=True):
                how = point["tool"].removeprefix(tool).strip(" ()")
                text = f"{point['budget']} budget" + (f", {how}" if how else "")
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
        ax.set_title(f"{points[0]['cases']} held-out cases of {fold}", fontsize=10)
        ax.set_xlabel("wall time (minutes)")
        ax.set_ylabel("mean Dice (95% over cases)")
        ax.margins(x=0.2)  # room for the labels
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Hippocampus, both tools on the same CPU and the same cases")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
