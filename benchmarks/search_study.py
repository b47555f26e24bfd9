"""Does the search pay on real data? A reduced C2FNAS protocol on MSD Task04 Hippocampus.

The split is the one ``benchmarks/hippocampus.py`` uses: the 200 cases in dataset order, the last
40 (fold 5) held out and scored once at the end. The searches never see them: they run in a
second run folder that holds only the other 160 cases (its own ordered split trains search
candidates on 128 and validates on 32), sharing the preprocessed cache of the first.

1. Coarse stage: Algorithm 1 (``c2f``), random search and aging evolution, ``--budget`` trained
   candidates each, for each of ``--seeds`` seeds, through the project's resumable worker and
   trial store. Candidates are keyed by topology, so a topology trained for one search is reused
   by every other (training is deterministic).
2. Fine stage on the best ``c2f`` topology: the project's supernet and random search over
   ``--colourings`` colourings, and each colouring also trained stand-alone (the supernet's
   ranking: Kendall tau, Spearman rho); all-3D, all-P3D and C2FNAS-Panc's own ops on the same
   topology as the fixed-op alternatives.
3. Every winner (one per strategy and seed), the fine-stage choice and its fixed-op rivals,
   C2FNAS-Panc and DynUNet (nnU-Net's network) retrained with one deployment schedule on the 160
   cases, scored on the 40 held-out ones: per-case Dice, mean and 95% intervals over seeds (the
   strategies) and over cases (paired bootstrap, one model against another).
4. Scoring choice: every candidate validates twice, so each has a best-validation and a final
   score; reported is how far the two rankings agree and whether any winner changes.

Everything lives in ``--work``; rerunning the command resumes where it stopped. Writes
``benchmarks/results/search_study.json`` and ``.png`` and prints the tables.

    .venv/bin/python benchmarks/search_study.py            # ~62 min on 2 AMD EPYC cores
    .venv/bin/python benchmarks/search_study.py --seeds 1 --budget 4 --colourings 4 \\
        --iterations 20 --retrain-iterations 20 --work /tmp/study-check   # a quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr, t

from c2fnas.accel.precision import resolve_precision
from c2fnas.accel.process import start_governor
from c2fnas.accel.swap import accelerate
from c2fnas.data import loader, splits
from c2fnas.data.pipeline import cached_case_ids, preprocess_dataset
from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.files.atomic import write_json_atomic
from c2fnas.files.run_folder import RunFolder
from c2fnas.nn import C2FNet
from c2fnas.search import fine
from c2fnas.search.coarse import make_job
from c2fnas.search.evaluate import TrainingEvaluator, candidate_dir, settings_from_config
from c2fnas.search.report import code_text, evaluated_in_order
from c2fnas.search.strategies import (
    STRATEGIES,
    CoarseToFine,
    RandomSearch,
    RegularizedEvolution,
    Strategy,
)
from c2fnas.search.worker import run_worker
from c2fnas.space import NUM_CELLS, Architecture
from c2fnas.training import RunConfig
from c2fnas.training.config import load_config
from c2fnas.training.loop import TrainResult, fit
from c2fnas.training.run import stream_seed, train
from c2fnas.training.validation import validate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402
from peers import PANC, dynunet  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
RESULTS = REPO / "benchmarks" / "results" / "search_study.json"
HELD_OUT_FOLD = 4  # of the full run: folds 1-4 train, fold 5 is held out
log = logging.getLogger("search_study")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=REPO.parent / "c2fnas-search-study")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=6, help="trained candidates per search")
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=240, help="per search candidate")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--colourings", type=int, default=20)
    parser.add_argument("--retrain-iterations", type=int, default=400)
    parser.add_argument(
        "--retrain-seeds", type=int, default=1,
        help="training seeds of the fine-stage models and the peers (a strategy's winners "
        "already differ by search seed)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("c2fnas", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = round(now - since, 1)
        log.info("%s done in %.1f min", name, (now - since) / 60)
        return now

    final_run, search_run = prepare(args.data, args.work)
    clock = phase("preprocessing", started)
    config = study_config(args)
    coarse = coarse_stage(args, search_run, config)
    clock = phase("coarse stage", clock)
    fine_result = fine_stage(args, search_run, config, coarse)
    clock = phase("fine stage and stand-alone colourings", clock)
    deployed = deployment(args, final_run, config, coarse, fine_result)
    phase("retraining and held-out scoring", clock)

    # A resumed study skips what is done: keep every invocation's time, not only the last.
    timings = args.work / "timings.json"
    invocations = json.loads(timings.read_text()) if timings.is_file() else []
    minutes = round((time.perf_counter() - started) / 60, 1)
    invocations.append({"finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "machine": machine.describe(), "minutes": minutes,
                        "phase_seconds": phases})  # fmt: skip
    write_json_atomic(timings, invocations)
    result = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine.describe(),
        "minutes": round(sum(item["minutes"] for item in invocations), 1),
        "invocations": invocations,
        "coarse": coarse,
        "fine": fine_result,
        "held_out": deployed,
        "scoring_choice": scoring_choice(coarse, fine_result),
    }
    print_tables(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output, result)
    plot(result, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")


# ---------------------------------------------------------------- data and settings


def prepare(data: Path, work: Path) -> tuple[Path, Path]:
    """The full run folder (200 cases) and the search's (the 160 not held out)."""
    final_run, search_run = work / "run", work / "search_run"
    if not RunFolder(final_run).plan.is_file():
        log.info("preprocessing %s into %s", data, final_run)
        preprocess_dataset(data, final_run, workers=min(2, os.cpu_count() or 1))
    ids = cached_case_ids(final_run)
    held_out = set(splits.load_or_create(final_run, ids)[HELD_OUT_FOLD].val)
    folder = RunFolder(search_run)
    if not folder.dataset_copy.is_file():
        search_run.mkdir(parents=True, exist_ok=True)
        description = json.loads(RunFolder(final_run).dataset_copy.read_text())
        description["training"] = [
            entry for entry, case in zip(description["training"], ids, strict=True)
            if case not in held_out
        ]  # fmt: skip
        description["numTraining"] = len(description["training"])
        folder.plan.write_bytes(RunFolder(final_run).plan.read_bytes())
        folder.cache.symlink_to(RunFolder(final_run).cache.resolve())
        write_json_atomic(folder.dataset_copy, description)
    searched = set(cached_case_ids(search_run))
    assert not searched & held_out and len(searched) + len(held_out) == len(ids)
    return final_run, search_run


def study_config(args: argparse.Namespace) -> RunConfig:
    """The ``cpu`` preset, with the study's search schedule (two validations per candidate, so
    each has a best and a final score) and its deployment schedule."""
    data = load_config("cpu").model_dump(mode="json")
    iterations, retrain = args.iterations, args.retrain_iterations
    data["search"].update(
        iterations=iterations, milestones=[round(0.7 * iterations)], width=args.width,
        clusters=args.clusters, coarse_networks=args.budget, fine_candidates=args.colourings,
    )  # fmt: skip
    data["training"].update(
        iterations=retrain,
        milestones=sorted({max(1, round(retrain * f)) for f in (0.6, 0.85)}),
        warmup_iterations=max(1, retrain // 20),
        validate_every=max(1, iterations // 2),
        checkpoint_every=max(1, iterations // 2),
    )
    return RunConfig.model_validate(data)


def deployment_config(config: RunConfig, seed: int) -> RunConfig:
    """Validated once, at the end; checkpoints four times, so an interrupted run resumes."""
    iterations = config.training.iterations
    return config.with_fields(
        "training", seed=seed, validate_every=iterations,
        checkpoint_every=max(1, iterations // 4),
    )  # fmt: skip


# ---------------------------------------------------------------- coarse stage


def strategy(name: str, seed: int, clusters: int) -> Strategy:
    """The study's strategies at its small budget: Algorithm 1 with one initial topology per
    cluster (so most of the budget goes to its ranking and exploration branches), and aging
    evolution whose population is as large as that initial round."""
    if name == "c2f":
        return CoarseToFine(seed=seed, clusters=clusters, initial_per_cluster=1)
    if name == "evolution":
        return RegularizedEvolution(population=clusters, sample=2)
    return RandomSearch()


def training_scores(folder: Path) -> dict[str, float]:
    """The best-validation and the final mean Dice of a finished training folder."""
    scores = {}
    for kind in ("best", "last"):
        info = json.loads((folder / kind / "model.json").read_text())
        scores["best" if kind == "best" else "final"] = float(statistics.mean(info["dice"]))
    return scores


def coarse_stage(args: argparse.Namespace, search_run: Path, config: RunConfig) -> dict[str, Any]:
    factory = TrainingEvaluator(config.to_yaml(), args.width)
    runs = []
    for seed in range(args.seeds):
        for name in STRATEGIES:
            settings = settings_from_config(
                config, name, seed=seed, heartbeat_interval=5, grace_period=20,
                poll_seconds=0.5,
            )  # fmt: skip
            store_path = args.work / "coarse" / f"{name}-seed{seed}.db"
            store_path.parent.mkdir(parents=True, exist_ok=True)
            job = make_job(search_run, settings, f"sqlite:///{store_path}")
            store = job.open_store()
            log.info("coarse search %s, seed %d", name, seed)
            run_worker(
                store, strategy(name, seed, args.clusters), factory(job, 0), args.budget,
                seed=seed, worker="study", poll_seconds=0.5, clusters=args.clusters,
            )  # fmt: skip
            candidates = []
            for record in evaluated_in_order(store.snapshot()):
                assert record.code is not None
                row = {"levels": list(record.code), "score": record.score,
                       "cluster": record.cluster, "seconds": record.seconds}  # fmt: skip
                if record.score is not None:
                    row.update(training_scores(candidate_dir(job, record.code)))
                candidates.append(row)
            scored = [c for c in candidates if c["score"] is not None]
            best = max(scored, key=lambda c: c["score"])
            runs.append({"strategy": name, "seed": seed, "candidates": candidates,
                         "best_levels": best["levels"], "best_score": best["score"]})  # fmt: skip
            log.info("  best %s: %.4f", best["levels"], best["score"])
    found = {
        name: interval([run["best_score"] for run in runs if run["strategy"] == name])
        for name in STRATEGIES
    }
    unique = {tuple(c["levels"]) for run in runs for c in run["candidates"]}
    return {"runs": runs, "best_search_score": found, "unique_topologies_trained": len(unique)}


# ---------------------------------------------------------------- fine stage


def fixed_colourings() -> dict[str, tuple[str, ...]]:
    panc = Architecture.load(PANC).ops
    return {"all 3D": ("3d",) * NUM_CELLS, "all P3D": ("p3d",) * NUM_CELLS, "C2FNAS-Panc ops": panc}


def ops_key(levels: list[int] | tuple[int, ...], ops: tuple[str, ...]) -> str:
    return code_text(tuple(levels)) + "_" + "".join(op[0] for op in ops)


def stand_alone(
    search_run: Path, work: Path, config: RunConfig, architecture: Architecture
) -> dict[str, float]:
    """Train a colouring from scratch like a coarse candidate (an all-3D one reuses the coarse
    stage's folder) and return its best-validation and final scores."""
    if set(architecture.ops) == {"3d"}:
        out = RunFolder(search_run).coarse.candidate(code_text(architecture.levels)).root
    else:
        out = work / "standalone" / ops_key(architecture.levels, architecture.ops)
    train(
        architecture,
        search_run,
        SEARCH_FOLD,
        config.for_search(),
        out,
        resume=True,
        accelerated=True,
        governor=start_governor(),
    )  # as the coarse stage trains it
    return training_scores(out)


def fine_stage(
    args: argparse.Namespace, search_run: Path, config: RunConfig, coarse: dict[str, Any]
) -> dict[str, Any]:
    c2f = [run for run in coarse["runs"] if run["strategy"] == "c2f"]
    levels = max(c2f, key=lambda run: run["best_score"])["best_levels"]
    topology = Architecture.coarse(levels, args.width)
    job = fine.make_job(search_run, topology, config, accelerated=True, poll_seconds=0.5)
    log.info("fine stage on %s: supernet", levels)
    fine.train_supernet(job, governor=start_governor())
    snapshot = fine.run_fine(job, workers=1)
    supernet_scores = {tuple(code): score for code, score in snapshot.finished}
    assert snapshot.best is not None and snapshot.best.code is not None
    choice = fine.decode(snapshot.best.code)
    rows = []
    for index, code in enumerate(fine.sample_colourings(args.colourings, config.training.seed)):
        ops = fine.decode(code)
        log.info("stand-alone colouring %d/%d: %s", index + 1, args.colourings, " ".join(ops))
        scores = stand_alone(search_run, args.work, config, topology.with_ops(ops))
        rows.append({"ops": list(ops), "supernet": supernet_scores[tuple(code)], **scores})
    fixed = {
        name: {"ops": list(ops), **stand_alone(search_run, args.work, config,
                                               topology.with_ops(ops))}
        for name, ops in fixed_colourings().items()
    }  # fmt: skip
    supernet = [row["supernet"] for row in rows]
    ranking = {}
    for score in ("best", "final"):
        alone = [row[score] for row in rows]
        tau, rho = kendalltau(supernet, alone), spearmanr(supernet, alone)
        ranking[score] = {"kendall_tau": tau.statistic, "kendall_p": tau.pvalue,
                          "spearman_rho": rho.statistic, "spearman_p": rho.pvalue}  # fmt: skip
    return {
        "topology": levels,
        "choice": list(choice),
        "colourings": rows,
        "fixed": fixed,
        "supernet_ranking": ranking,
    }


# ---------------------------------------------------------------- deployment


def per_case_dice(network: torch.nn.Module, run_dir: Path, cases: list[str],
                  config: RunConfig, classes: int) -> list[float]:  # fmt: skip
    """Mean foreground Dice of each held-out case (sliding window on the preprocessed case)."""
    device = next(network.parameters()).device
    precision = resolve_precision(config.training.precision, device)
    network.eval()
    values = []
    with torch.no_grad():
        for case in loader.validation_cases(run_dir, cases):
            total, _ = validate(network, [case], classes, config.data.patch,
                                config.training.stride, precision, device,
                                config.training.window_batch)  # fmt: skip
            values.append(float(total.mean()))
    return values


def retrain(
    args: argparse.Namespace, final_run: Path, config: RunConfig, name: str,
    architecture: Architecture | None, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Train one model (an architecture, or DynUNet for None) on the 160 cases with the
    deployment schedule; score the 40 held-out cases. Cached in its folder."""
    key = ops_key(architecture.levels, architecture.ops) if architecture else "dynunet"
    if architecture is not None and architecture.width != args.width:
        key += f"_w{architecture.width}"
    out = args.work / "deploy" / f"{key}_seed{seed}"
    scored = out / "held_out.json"
    if scored.is_file():
        return {**json.loads(scored.read_text()), "name": name}
    plan = Plan.load(final_run)
    fold = splits.load_or_create(final_run, cached_case_ids(final_run))[HELD_OUT_FOLD]
    config = deployment_config(config, seed)
    data = config.data
    torch.manual_seed(seed)
    if architecture is None:
        network = dynunet(plan.in_channels, plan.num_classes)
    else:
        network = accelerate(C2FNet(architecture, plan.in_channels, plan.num_classes))

    def batches(start: int) -> Any:
        return loader.train_batches(
            final_run, fold.train, data.patch, data.batch_size, stream_seed(seed, 0, start),
            data.foreground_oversample, data.workers,
        )  # fmt: skip

    log.info("retraining %s (seed %d) for %d iterations", name, seed, config.training.iterations)
    result: TrainResult = fit(
        network, architecture, batches, lambda: loader.validation_cases(final_run, fold.val),
        config, out, resume=True, device=torch.device("cpu"),
        governor=start_governor(torch.device("cpu")),
        model_info={"study": name, "in_channels": plan.in_channels,
                    "num_classes": plan.num_classes, "plan": plan.model_dump(mode="json")},
    )  # fmt: skip
    per_case = per_case_dice(network, final_run, fold.val, config, plan.num_classes)
    row = {
        "key": key, "seed": seed, "mean_dice": statistics.mean(per_case), "per_case": per_case,
        "train_seconds": round(result.seconds, 1),
        "params_millions": sum(p.numel() for p in network.parameters()) / 1e6,
    }  # fmt: skip
    write_json_atomic(scored, row)
    log.info("  held-out mean Dice %.4f", row["mean_dice"])
    return {**row, "name": name}


def deployment(
    args: argparse.Namespace, final_run: Path, config: RunConfig,
    coarse: dict[str, Any], fine_result: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    winners = []
    for run in coarse["runs"]:
        architecture = Architecture.coarse(run["best_levels"], args.width)
        winners.append({**retrain(args, final_run, config, run["strategy"], architecture, 0),
                        "strategy": run["strategy"], "search_seed": run["seed"]})  # fmt: skip
    topology = Architecture.coarse(fine_result["topology"], args.width)
    models: dict[str, Architecture | None] = {
        "fine-stage choice": topology.with_ops(tuple(fine_result["choice"])),
        **{name: topology.with_ops(tuple(item["ops"]))
           for name, item in fine_result["fixed"].items()},
        "C2FNAS-Panc": Architecture.load(PANC).with_width(args.width),
        "DynUNet": None,
    }  # fmt: skip
    fixed = [
        retrain(args, final_run, config, name, architecture, seed)
        for name, architecture in models.items()
        for seed in range(args.retrain_seeds)
    ]
    strategies = {}
    for name in STRATEGIES:
        values = [w["mean_dice"] for w in winners if w["strategy"] == name]
        strategies[name] = interval(values)
    comparisons = {
        f"{a} - {b}": paired_bootstrap(by_name(fixed, a), by_name(fixed, b))
        for a, b in [("fine-stage choice", "all 3D"), ("fine-stage choice", "all P3D"),
                     ("fine-stage choice", "C2FNAS-Panc ops"), ("fine-stage choice", "DynUNet"),
                     ("C2FNAS-Panc", "DynUNet")]
    }  # fmt: skip
    for name in ("random", "evolution"):
        comparisons[f"c2f - {name} (winners, paired by search seed)"] = paired_by_seed(
            winners, "c2f", name
        )
    return {
        "winners": winners,
        "strategies": strategies,
        "models": fixed,
        "model_intervals": {name: interval_of_cases(by_name(fixed, name)) for name in models},
        "comparisons": comparisons,
    }


# ---------------------------------------------------------------- statistics


def interval(values: list[float]) -> dict[str, Any]:
    """Mean and the 95% t-interval over ``values`` (seeds)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": len(values)}
    half = t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values),
            "values": values}  # fmt: skip


def by_name(models: list[dict[str, Any]], name: str) -> np.ndarray:
    """Per-case Dice of a model, averaged over its training seeds."""
    return np.mean([m["per_case"] for m in models if m["name"] == name], axis=0)


def bootstrap_means(values: np.ndarray, resamples: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    return values[picks].mean(axis=1)


def interval_of_cases(values: np.ndarray) -> dict[str, float]:
    """Mean and the 95% bootstrap interval over the held-out cases."""
    means = bootstrap_means(values)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high)}


def paired_bootstrap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean per-case difference a - b, its 95% bootstrap interval, and the share of resamples
    in which a is not better (a one-sided p-value)."""
    differences = a - b
    means = bootstrap_means(differences)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(differences.mean()), "low": float(low), "high": float(high),
            "p_not_better": float((means <= 0).mean())}  # fmt: skip


def paired_by_seed(winners: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Held-out Dice of strategy ``a``'s winner minus ``b``'s, per search seed."""
    score = {(w["strategy"], w["search_seed"]): w["mean_dice"] for w in winners}
    seeds = sorted({seed for _, seed in score})
    result = interval([score[a, seed] - score[b, seed] for seed in seeds])
    return {"difference": result.pop("mean"), **result}


def scoring_choice(coarse: dict[str, Any], fine_result: dict[str, Any]) -> dict[str, Any]:
    """Do the best-validation and the final scores rank candidates alike? Does any winner
    change?"""
    unique = {}
    for run in coarse["runs"]:
        for candidate in run["candidates"]:
            if candidate["score"] is not None:
                unique[tuple(candidate["levels"])] = candidate
    rows = list(unique.values()) + list(fine_result["colourings"])
    tau = kendalltau([r["best"] for r in rows], [r["final"] for r in rows])
    changed = []
    for run in coarse["runs"]:
        scored = [c for c in run["candidates"] if c["score"] is not None]
        by_best = max(scored, key=lambda c: c["best"])["levels"]
        by_final = max(scored, key=lambda c: c["final"])["levels"]
        if by_best != by_final:
            changed.append({"strategy": run["strategy"], "seed": run["seed"],
                            "best": by_best, "final": by_final})  # fmt: skip
    final_choice = max(fine_result["colourings"], key=lambda r: r["final"])["ops"]
    best_choice = max(fine_result["colourings"], key=lambda r: r["best"])["ops"]
    return {
        "candidates": len(rows),
        "kendall_tau": tau.statistic,
        "kendall_p": tau.pvalue,
        "identical": sum(r["best"] == r["final"] for r in rows),
        "coarse_winners_changed": changed,
        "runs": len(coarse["runs"]),
        "stand_alone_winner_changed": final_choice != best_choice,
    }


# ---------------------------------------------------------------- output


def print_tables(result: dict[str, Any]) -> None:
    held = result["held_out"]
    print(f"\nheld-out mean Dice (40 cases), winners retrained; study took {result['minutes']} min")
    print("| strategy | best search Dice found | held-out Dice of its winner, mean | "
          "95% interval over search seeds | per seed |")  # fmt: skip
    print("| --- | ---: | ---: | --- | --- |")
    for name, item in held["strategies"].items():
        values = " ".join(f"{v:.4f}" for v in item.get("values", [item["mean"]]))
        found = result["coarse"]["best_search_score"][name]["mean"]
        print(f"| {name} | {found:.4f} | {item['mean']:.4f} | "
              f"{item['low']:.4f}-{item['high']:.4f} | {values} |")  # fmt: skip
    print("\n| model | held-out mean Dice | 95% interval over cases |")
    print("| --- | ---: | --- |")
    for name, item in held["model_intervals"].items():
        print(f"| {name} | {item['mean']:.4f} | {item['low']:.4f}-{item['high']:.4f} |")
    print("\n| comparison | difference | 95% interval | p (a not better) |")
    print("| --- | ---: | --- | ---: |")
    for name, item in held["comparisons"].items():
        p = item.get("p_not_better", math.nan)
        print(f"| {name} | {item['difference']:+.4f} | {item['low']:+.4f} to "
              f"{item['high']:+.4f} | {p:.3f} |")  # fmt: skip
    for score, item in result["fine"]["supernet_ranking"].items():
        print(f"supernet vs stand-alone ({score} scores, {len(result['fine']['colourings'])} "
              f"colourings): Kendall tau {item['kendall_tau']:+.3f} "
              f"(p = {item['kendall_p']:.3f}), Spearman rho {item['spearman_rho']:+.3f} "
              f"(p = {item['spearman_p']:.3f})")  # fmt: skip
    choice = result["scoring_choice"]
    print(f"best vs final scores over {choice['candidates']} candidates: Kendall tau "
          f"{choice['kendall_tau']:+.3f}; coarse winners changed in "
          f"{len(choice['coarse_winners_changed'])} of {choice['runs']} searches")  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    for name in STRATEGIES:
        curves = []
        for run in result["coarse"]["runs"]:
            if run["strategy"] == name:
                scores = [c["score"] or 0.0 for c in run["candidates"]]
                curves.append(np.maximum.accumulate(scores))
        mean = np.mean(curves, axis=0)
        left.plot(range(1, len(mean) + 1), mean, marker="o", label=name)
    left.set_xlabel("candidates trained")
    left.set_ylabel("best search-validation Dice (mean over seeds)")
    left.legend(frameon=False)

    held = result["held_out"]
    labels, means, lows, highs = [], [], [], []
    for name, item in {**held["strategies"], **held["model_intervals"]}.items():
        labels.append(name)
        means.append(item["mean"])
        lows.append(item["mean"] - item["low"] if math.isfinite(item["low"]) else 0.0)
        highs.append(item["high"] - item["mean"] if math.isfinite(item["high"]) else 0.0)
    middle.errorbar(means, range(len(labels)), xerr=[lows, highs], fmt="o", capsize=3)
    for w in held["winners"]:
        middle.plot(w["mean_dice"], labels.index(w["strategy"]), "x", color="grey")
    middle.set_yticks(range(len(labels)), labels)
    middle.set_xlabel("held-out mean Dice (95% interval)")
    middle.invert_yaxis()

    rows = result["fine"]["colourings"]
    right.scatter([r["supernet"] for r in rows], [r["best"] for r in rows])
    ranking = result["fine"]["supernet_ranking"]["best"]
    right.set_title(f"Kendall tau {ranking['kendall_tau']:+.2f} (p = {ranking['kendall_p']:.2f})")
    right.set_xlabel("supernet Dice")
    right.set_ylabel("stand-alone Dice")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
