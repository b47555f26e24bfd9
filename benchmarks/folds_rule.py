"""Folds or one model at a fixed budget, scored on test cases that no model saw.

Under ``--time-budget`` the planner trains the most folds that each still get
``costs.solve.MIN_FOLD_ITERATIONS`` iterations, and the run predicts new cases with the
majority vote of the folds trained. Whether a user's new cases are better served by that ensemble
or by one model trained for the whole budget (``--folds 0``) cannot be read from out-of-fold
Dice: each fold's validation cases are in the other folds' training cases, so no case is unseen
by the whole ensemble. That minimum was 5,000 iterations when this benchmark's records were made
(``folds_rule_60m.json``, ``folds_rule_60m_seed1.json``: the plan then trained 4 and 3 folds in
an hour on 2 cores); because of them it is now the paper's 40,000, so an hour plans one model, and
``--ensemble-folds 0 1 2`` gives the ensemble arm those folds instead of the plan's.

This benchmark makes such cases. ``--test-cases`` of the dataset's training cases (40 of 200 by
default, drawn with ``--seed``) become a test split: ``--work/data`` is a Decathlon folder of
symlinks (nothing copied) whose ``imagesTr``/``labelsTr`` hold the other cases and whose
``imagesTs``/``labelsTs`` hold the drawn ones. ``benchmarks/hippocampus.py --run-budget`` then
runs ``c2fnas run --arch architectures/c2fnas-panc.json --time-budget BUDGET`` on it twice, alone
and one after the other: as planned (or with ``--ensemble-folds``), and with ``--folds 0``. Each
run predicts the test cases with its models and scores them once, at its end (nothing is chosen
on them). The record is each run's test Dice with a 95% bootstrap interval over the test cases
and the paired per-case difference, written to ``benchmarks/results/folds_rule_<budget>.json``.

The plan may mirror one run's prediction and not the other's (mirroring is planned when it costs
at most 5% of the budget, and an ensemble's costs more). So both runs' models also predict the
test cases both ways afterwards (``c2fnas predict --tta`` and ``--no-tta``, the run's stride and
post-processing): a 2 x 2 table, and the difference at equal mirroring. The prediction the run
made itself is repeated too and must score as in the run.

A run stopped by the end of a session resumes when the same command is run again (each run's
wall time adds up its starts, see ``hippocampus.py``); a run that finished is not trained again.

Usage::

    .venv/bin/python benchmarks/folds_rule.py --budget 60m --ensemble-folds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
from c2fnas.evaluation.metrics import evaluate_folders  # noqa: E402
from c2fnas.training.config import load_config  # noqa: E402
from search_study import interval_of_cases, paired_bootstrap  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("folds_rule")


def build_view(data: Path, view: Path, test_cases: int, seed: int) -> dict[str, Any]:
    """``view``: ``data`` with ``test_cases`` training cases moved to the test split, as links.

    An existing view is reused only if it holds the same draw (the same ``dataset.json``), so
    that a resumed run trains on the cases it started with.
    """
    description = json.loads((data / "dataset.json").read_text())
    training = list(description["training"])
    drawn = set(np.random.default_rng(seed).choice(len(training), test_cases, replace=False))
    test = [entry for index, entry in enumerate(training) if index in drawn]
    kept = [entry for index, entry in enumerate(training) if index not in drawn]
    as_test = {"image": "imagesTs", "label": "labelsTs"}
    test_entries = [{key: "./" + str(Path(as_test[key]) / Path(entry[key]).name) for key in entry}
                    for entry in test]  # fmt: skip
    viewed = {
        **description,
        "description": f"{description.get('name', data.name)}: {test_cases} training cases drawn "
        f"with seed {seed} held out as a test split (benchmarks/folds_rule.py)",
        "numTraining": len(kept), "numTest": len(test), "training": kept,
        "test": [entry["image"] for entry in test_entries],
    }  # fmt: skip
    text = json.dumps(viewed, indent=2) + "\n"
    if (view / "dataset.json").is_file():
        if (view / "dataset.json").read_text() != text:
            raise SystemExit(f"{view} holds another draw: delete it or use another --work")
        return viewed
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (view / folder).mkdir(parents=True, exist_ok=True)
    for entry in kept:
        for relative in entry.values():
            (view / relative).symlink_to((data / relative).resolve())
    for entry, moved in zip(test, test_entries, strict=True):
        for key, relative in entry.items():
            (view / moved[key]).symlink_to((data / relative).resolve())
    (view / "dataset.json").write_text(text)
    return viewed


def mean_per_case(scores: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Each case's Dice, the mean over its foreground labels, from ``(case, dice)`` pairs."""
    per_case: dict[str, list[float]] = {}
    for case, dice in scores:
        per_case.setdefault(case, []).append(dice)
    return {case: float(np.mean(values)) for case, values in sorted(per_case.items())}


def test_dice(cases_csv: Path) -> dict[str, float]:
    """Each test case's Dice from a run's evaluation (``evaluation/cases.csv``)."""
    with cases_csv.open() as rows:
        return mean_per_case((row["case"], float(row["dice"])) for row in csv.DictReader(rows))


def both_ways(
    run_dir: Path, folds: list[int], view: Path, out: Path
) -> dict[str, dict[str, float]]:
    """Each test case's Dice when the run's models predict without and with mirroring."""
    config = load_config("paper", run_dir / "config.yaml")
    stride = ",".join(map(str, config.training.stride))
    scored = {}
    for way in ("plain", "mirrored"):
        predictions = out / way
        command = [sys.executable, "-m", "c2fnas", "predict", "-i", str(view / "imagesTs"),
                   "-o", str(predictions), "--stride", stride,
                   "--tta" if way == "mirrored" else "--no-tta"]  # fmt: skip
        for fold in folds:
            command += ["-m", str(run_dir / "train" / f"fold_{fold}")]
        subprocess.run(command, check=True)
        scores = evaluate_folders(predictions, view / "labelsTs")
        scored[way] = mean_per_case((score.case, score.dice) for score in scores)
    return scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="Task04_Hippocampus folder")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "folds-rule")
    parser.add_argument("--budget", default="60m", help="each run's --time-budget")
    parser.add_argument("--test-cases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="draws the test cases")
    parser.add_argument(
        "--ensemble-folds", type=int, nargs="+", default=None, metavar="FOLD",
        help="the ensemble arm's folds (default: the plan's; an hour on 2 cores now plans one)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--accept-changed-data", action="store_true", help="passed to a resumed run"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    view = args.work / "data"
    build_view(args.data, view, args.test_cases, args.seed)
    records: dict[str, dict[str, Any]] = {}
    ensemble = ["--folds", *map(str, args.ensemble_folds)] if args.ensemble_folds else []
    suffixes = {  # hippocampus.py's run folders
        "planned": f"-folds{''.join(map(str, args.ensemble_folds))}" if ensemble else "",
        "one_model": "-folds0",
    }
    for name, folds in (("planned", ensemble), ("one_model", ["--folds", "0"])):
        record = args.work / f"{name}.json"
        command = [sys.executable, str(REPO / "benchmarks" / "hippocampus.py"),
                   "--run-budget", args.budget, "--data", str(view), "--work", str(args.work),
                   "--out", str(record), *folds]  # fmt: skip
        if args.accept_changed_data:
            command.append("--accept-changed-data")
        log.info("%s: %s", name, " ".join(command))
        subprocess.run(command, check=True)
        records[name] = json.loads(record.read_text())
    scores, crossed, mirrored_by_plan = {}, {}, {}
    for name, record in records.items():
        run_dir = args.work / f"run-panc-{args.budget}{suffixes[name]}"
        scores[name] = test_dice(run_dir / "evaluation" / "cases.csv")
        if len(scores[name]) != args.test_cases:
            raise SystemExit(f"{run_dir}: {len(scores[name])} test cases scored, not "
                             f"{args.test_cases}")  # fmt: skip
        crossed[name] = both_ways(run_dir, record["folds"], view, args.work / f"{name}-tta")
        mirrored_by_plan[name] = load_config("paper", run_dir / "config.yaml").training.tta
        own = crossed[name]["mirrored" if mirrored_by_plan[name] else "plain"]
        gap = max(abs(own[case] - scores[name][case]) for case in scores[name])
        if gap > 1e-6:
            raise SystemExit(f"{run_dir}: predicting again as the run did moved a case's Dice by "
                             f"{gap:.4f}: the cross-check does not repeat the run")  # fmt: skip
    cases = sorted(scores["planned"])

    def one_minus_planned(dice: dict[str, dict[str, float]]) -> dict[str, float]:
        def values(name: str) -> np.ndarray:
            return np.array([dice[name][case] for case in cases])

        return paired_bootstrap(values("one_model"), values("planned"))

    report = {
        "budget": args.budget,
        "test_cases": cases,
        "seed": args.seed,
        "ensemble_folds": args.ensemble_folds,
        "runs": {
            name: {
                "command": record["command"],
                "wall_seconds": record["wall_seconds"],
                "folds": record["folds"],
                "iterations_per_fold": record["iterations_per_fold"],
                "planned_iterations_per_fold": record["planned_iterations_per_fold"],
                "fold_dice": record["fold_dice"],
                "out_of_fold": {
                    key: value
                    for key, value in (record["out_of_fold"] or {}).items()
                    if key != "per_case"
                },
                "test": {
                    **interval_of_cases(np.array(list(scores[name].values()))),
                    "per_case": scores[name],
                },
            }
            for name, record in records.items()
        },
        "one_model_minus_planned": one_minus_planned(scores),
        "mirroring": {
            "by_plan": mirrored_by_plan,
            "test": {
                name: {
                    way: interval_of_cases(np.array(list(dice.values())))
                    for way, dice in ways.items()
                }
                for name, ways in crossed.items()
            },
            "one_model_minus_planned": {
                way: one_minus_planned({name: ways[way] for name, ways in crossed.items()})
                for way in ("plain", "mirrored")
            },
            "per_case": crossed,
        },
        "machine": machine.describe(),
    }
    out = args.out or RESULTS / f"folds_rule_{args.budget}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    cpu = report["machine"]["cpu"]
    table = Table(title=f"{args.budget} budget, {len(cases)} test cases ({cpu})")
    for column in ("run", "folds", "iterations/fold", "wall (min)", "test Dice (95%)"):
        table.add_column(column, justify="right")
    for name, run in report["runs"].items():
        test = run["test"]
        table.add_row(
            name, ", ".join(map(str, run["folds"])), str(run["iterations_per_fold"]),
            f"{run['wall_seconds'] / 60:.1f}",
            f"{test['mean']:.4f} [{test['low']:.4f}, {test['high']:.4f}]",
        )  # fmt: skip
    difference = report["one_model_minus_planned"]
    Console().print(table)
    Console().print(
        f"one model - planned: {difference['difference']:+.4f} "
        f"[{difference['low']:+.4f}, {difference['high']:+.4f}]"
    )
    ways = Table(title="test Dice of the same models, each way of predicting")
    for column in ("run", "plain", "mirrored", "the run's own"):
        ways.add_column(column, justify="right")
    for name, entry in report["mirroring"]["test"].items():
        own = "mirrored" if mirrored_by_plan[name] else "plain"
        ways.add_row(name, *(f"{entry[way]['mean']:.4f}" for way in ("plain", "mirrored")), own)
    Console().print(ways)
    for way, result in report["mirroring"]["one_model_minus_planned"].items():
        Console().print(
            f"{way}: one model - planned {result['difference']:+.4f} "
            f"[{result['low']:+.4f}, {result['high']:+.4f}]"
        )
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
