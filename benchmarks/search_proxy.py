"""The coarse-stage strategies on a cheap proxy task with real training.

Every strategy (topology-similarity evolution ``c2f``, random search, aging evolution) runs the
coarse search for ``--budget`` networks per seed on a small synthetic dataset; each candidate is
trained from scratch for ``--iterations`` (tiny patches and width) by the real evaluator and
scored by validation Dice. A topology trained once is reused by the other runs (candidate
folders are keyed by topology and training is deterministic), which keeps the cost down.
Reported: the best Dice found after each number of evaluated networks, mean over seeds; a plot.

    .venv/bin/python benchmarks/search_proxy.py --seeds 3 --budget 8 --iterations 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.search.coarse import CoarseSettings, make_job
from c2fnas.search.evaluate import TrainingEvaluator
from c2fnas.search.report import evaluated_in_order
from c2fnas.search.strategies import STRATEGIES
from c2fnas.search.worker import run_worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import short_search_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_proxy.json"


def best_so_far(scores: list[float]) -> list[float]:
    curve, best = [], 0.0
    for score in scores:
        best = max(best, score)
        curve.append(best)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    config = short_search_config(args.iterations, args.width)
    curves: dict[str, list[list[float]]] = {name: [] for name in STRATEGIES}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        dataset = make_synthetic_dataset(work / "data", cases=16, seed=0)
        run_dir = work / "run"
        preprocess_dataset(dataset, run_dir)
        factory = TrainingEvaluator(config.to_yaml(), args.width)
        for seed in range(args.seeds):
            for name in STRATEGIES:
                settings = CoarseSettings(
                    budget=args.budget, strategy=name, seed=seed, clusters=args.clusters,
                    poll_seconds=0.1,
                )  # fmt: skip
                job = make_job(run_dir, settings, f"sqlite:///{work / f'{name}-{seed}.db'}")
                store = job.open_store()
                run_worker(
                    store, settings.make_strategy(), factory(job, 0), args.budget,
                    seed=seed, worker="proxy", poll_seconds=0.1, clusters=args.clusters,
                )  # fmt: skip
                scores = [r.score or 0.0 for r in evaluated_in_order(store.snapshot())]
                curves[name].append(best_so_far(scores))
                print(f"seed {seed} {name:9s} best Dice so far: "
                      + " ".join(f"{v:.3f}" for v in curves[name][-1]), flush=True)  # fmt: skip
    mean_curves = {
        name: [statistics.mean(values) for values in zip(*runs, strict=True)]
        for name, runs in curves.items()
    }
    print(f"\nmean best Dice after n networks ({args.seeds} seeds, {args.iterations} iterations)")
    print(f"{'strategy':10s} " + " ".join(f"{n:>6d}" for n in range(1, args.budget + 1)))
    for name, curve in mean_curves.items():
        print(f"{name:10s} " + " ".join(f"{v:6.3f}" for v in curve))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.output.write_text(json.dumps({
        "settings": settings, "seconds": time.perf_counter() - started,
        "curves": curves, "mean_curves": mean_curves,
    }, indent=2))  # fmt: skip
    plot(mean_curves, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")


def plot(mean_curves: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 3.5))
    for name, curve in mean_curves.items():
        axes.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    axes.set_xlabel("networks evaluated")
    axes.set_ylabel("best validation Dice so far (mean over seeds)")
    axes.legend(frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
