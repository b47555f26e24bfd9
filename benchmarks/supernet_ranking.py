"""How well does the supernet rank colourings? Kendall tau between supernet scores and
stand-alone training scores, at a tiny scale on the CPU, reported whatever it is.

1. A synthetic dataset is made and preprocessed (``c2fnas.data``).
2. The supernet of one topology is trained with uniform single-path sampling for 2 x
   ``--iterations`` (the fine stage's ``train_supernet``).
3. ``--colourings`` distinct colourings are scored with the supernet's weights (``supernet_scorer``,
   the fine stage's scoring) and trained from scratch for ``--iterations`` each, validated on the
   same fold.
4. Kendall tau and Spearman rho between the two score lists; a table and JSON.

    .venv/bin/python benchmarks/supernet_ranking.py --colourings 8 --iterations 150
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import kendalltau, spearmanr

from c2fnas.accel.process import start_governor
from c2fnas.accel.swap import accelerate
from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.search.colourings import decode, sample_colourings
from c2fnas.search.fine import load_supernet, make_job, supernet_scorer, train_supernet
from c2fnas.search.worker import TrialContext
from c2fnas.space import Architecture
from c2fnas.training.run import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import short_search_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "supernet_ranking.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--colourings", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="Keep the run here.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    config = short_search_config(args.iterations, args.width, fine_candidates=args.colourings)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        dataset = make_synthetic_dataset(work / "data", cases=args.cases, seed=args.seed)
        run_dir = work / "run"
        preprocess_dataset(dataset, run_dir)
        levels = Architecture.load(REPO / "architectures" / "c2fnas-panc.json").levels
        job = make_job(run_dir, Architecture.coarse(levels, args.width), config, accelerated=True)

        started = time.perf_counter()
        train_supernet(job, governor=start_governor())
        supernet_seconds = time.perf_counter() - started
        score = supernet_scorer(job, accelerate(load_supernet(job)))
        rows = []
        for index, code in enumerate(sample_colourings(args.colourings, args.seed)):
            candidate = job.candidate(code)
            started = time.perf_counter()
            supernet_dice = score(candidate, TrialContext(index, code, "benchmark", None))
            scoring_seconds = time.perf_counter() - started
            started = time.perf_counter()
            result = train(
                candidate, run_dir, SEARCH_FOLD, config.for_search(),
                work / "standalone" / str(index), accelerated=True, governor=start_governor(),
            )  # fmt: skip
            rows.append(
                {
                    "ops": " ".join(decode(code)),
                    "supernet_dice": supernet_dice,
                    "standalone_dice": result.best_mean,
                    "scoring_seconds": scoring_seconds,
                    "standalone_seconds": time.perf_counter() - started,
                }
            )
            print(f"{rows[-1]['ops']:50s} supernet {supernet_dice:.4f}  "
                  f"stand-alone {result.best_mean:.4f}", flush=True)  # fmt: skip

    tau = kendalltau([r["supernet_dice"] for r in rows], [r["standalone_dice"] for r in rows])
    rho = spearmanr([r["supernet_dice"] for r in rows], [r["standalone_dice"] for r in rows])
    print(
        f"\n{len(rows)} colourings of C2FNAS-Panc's topology, width {args.width}, supernet "
        f"{2 * args.iterations} iterations, stand-alone {args.iterations} each"
    )
    print(f"Kendall tau {tau.statistic:+.3f} (p = {tau.pvalue:.3f}); "
          f"Spearman rho {rho.statistic:+.3f} (p = {rho.pvalue:.3f})")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "supernet_seconds": supernet_seconds,
        "kendall_tau": tau.statistic, "kendall_p": tau.pvalue,
        "spearman_rho": rho.statistic, "spearman_p": rho.pvalue,
        "rows": rows,
    }, indent=2))  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
