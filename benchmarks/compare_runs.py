"""Two ``hippocampus.py --run-budget`` records on the same cases: each one's out-of-fold Dice and
the paired per-case difference, with 95% bootstrap intervals over the cases.

Usage::

    .venv/bin/python benchmarks/compare_runs.py \\
        benchmarks/results/hippocampus_run_panc_3h.json \\
        benchmarks/results/hippocampus_run_search_3h.json
    .venv/bin/python benchmarks/compare_runs.py --common A.json B.json   # A trained fewer folds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_study import interval_of_cases, paired_bootstrap  # noqa: E402


def per_case(path: Path) -> dict[str, float]:
    record = json.loads(path.read_text())
    scores = (record.get("out_of_fold") or {}).get("per_case")
    if not scores:
        raise SystemExit(
            f"{path}: no out-of-fold per-case Dice (c2fnas run's postprocess stage writes it)"
        )
    return {case: float(value) for case, value in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="record A (the difference is A - B)")
    parser.add_argument("b", type=Path, help="record B")
    parser.add_argument(
        "--common",
        action="store_true",
        help="compare on the cases both scored (a run of fewer folds scored fewer cases)",
    )
    args = parser.parse_args()
    a, b = per_case(args.a), per_case(args.b)
    if set(a) != set(b) and not args.common:
        raise SystemExit(
            f"the records scored different cases ({len(a)} and {len(b)}); "
            "--common compares the cases both scored"
        )
    cases = sorted(set(a) & set(b))
    if not cases:
        raise SystemExit("the records scored no case in common")
    first, second = np.array([a[c] for c in cases]), np.array([b[c] for c in cases])
    scope = "" if set(a) == set(b) else f" (those both scored, of {len(a)} and {len(b)})"
    table = Table(title=f"out-of-fold Dice over {len(cases)} cases{scope}")
    for column in ("record", "mean Dice [95%]"):
        table.add_column(column)
    for path, values in ((args.a, first), (args.b, second)):
        result = interval_of_cases(values)
        shown = f"{result['mean']:.4f} [{result['low']:.4f}, {result['high']:.4f}]"
        table.add_row(path.name, shown)
    paired = paired_bootstrap(first, second)
    table.add_row(
        "A - B, paired",
        f"{paired['difference']:+.4f} [{paired['low']:+.4f}, {paired['high']:+.4f}]",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
