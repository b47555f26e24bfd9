"""Compare the coarse-stage strategies on cheap synthetic landscapes over the 924 topologies.

No network is trained: each landscape scores a topology from its code, so the comparison isolates
the search strategy. The landscapes:

- ``smooth``: minus the Euclidean distance to a hidden optimum (neighbouring codes score alike,
  the assumption behind the paper's topology-similarity clustering);
- ``rugged``: the same plus independent noise per topology (std 1.0, about the score spread
  between neighbours), so similarity only partly predicts the score;
- ``random``: independent scores, no structure at all (no strategy can beat random search).

For each landscape and seed, every strategy evaluates ``--budget`` topologies (50 in the paper)
with ``--workers`` simulated asynchronous workers. Reported: the rank of the best topology found
among all 924 (1 = the optimum), its mean and median over seeds, and how often it is in the top 10.

    PYTHONPATH=src python benchmarks/search_strategies.py --seeds 50
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from c2fnas.search.simulate import simulate
from c2fnas.search.strategies import STRATEGIES, Code, make_strategy
from c2fnas.space import distance, u_shaped_topologies

RESULTS = Path(__file__).resolve().parent / "results" / "search_strategies.json"
Landscape = Callable[[int], Callable[[Code], float]]


def smooth(seed: int) -> Callable[[Code], float]:
    target = random.Random(seed).choice(u_shaped_topologies())
    return lambda code: -distance(code, target)


def rugged(seed: int) -> Callable[[Code], float]:
    base = smooth(seed)
    noise = random.Random(f"noise:{seed}")
    offsets = {code: noise.gauss(0.0, 1.0) for code in u_shaped_topologies()}
    return lambda code: base(code) + offsets[code]


def unstructured(seed: int) -> Callable[[Code], float]:
    rng = random.Random(f"random:{seed}")
    scores = {code: rng.random() for code in u_shaped_topologies()}
    return scores.__getitem__


LANDSCAPES: dict[str, Landscape] = {"smooth": smooth, "rugged": rugged, "random": unstructured}


def rank_of_best(objective: Callable[[Code], float], found: list[tuple[Code, float]]) -> int:
    ordered = sorted((objective(code) for code in u_shaped_topologies()), reverse=True)
    best = max(score for _, score in found)
    return 1 + sum(score > best for score in ordered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args()
    results = []

    print(
        f"| landscape | strategy | mean rank of best | median rank | in top 10 | "
        f"seconds ({options.seeds} seeds, budget {options.budget}, {options.workers} workers) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for landscape_name, landscape in LANDSCAPES.items():
        for name in STRATEGIES:
            start = time.perf_counter()
            ranks = []
            for seed in range(options.seeds):
                objective = landscape(seed)
                found = simulate(
                    make_strategy(name), objective, options.budget, options.workers, seed
                )
                ranks.append(rank_of_best(objective, found))
            seconds = time.perf_counter() - start
            top10 = sum(rank <= 10 for rank in ranks) / len(ranks)
            results.append(
                {"landscape": landscape_name, "strategy": name, "ranks": ranks,
                 "mean_rank": statistics.mean(ranks), "median_rank": statistics.median(ranks),
                 "top10": top10, "seconds": seconds}
            )  # fmt: skip
            print(
                f"| {landscape_name} | {name} | {statistics.mean(ranks):.1f} | "
                f"{statistics.median(ranks):.0f} | {top10:.0%} | {seconds:.1f} |"
            )
    options.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()}
    options.output.write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    plot(results, options.output.with_suffix(".png"))
    print(f"wrote {options.output} and {options.output.with_suffix('.png')}")


def plot(results: list[dict], path: Path) -> None:
    """Mean rank of the best topology found, per landscape and strategy (lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    landscapes = list(dict.fromkeys(r["landscape"] for r in results))
    figure, axes = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(STRATEGIES)
    for offset, name in enumerate(STRATEGIES):
        means = [
            next(
                r["mean_rank"] for r in results if r["landscape"] == land and r["strategy"] == name
            )
            for land in landscapes
        ]
        positions = [index + offset * width for index in range(len(landscapes))]
        axes.bar(positions, means, width, label=name)
    axes.set_xticks([index + width for index in range(len(landscapes))], landscapes)
    axes.set_ylabel("mean rank of the best found (1 = optimum)")
    axes.legend(frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
