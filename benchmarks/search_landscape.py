"""What can a topology search gain on real data? The landscape of MSD Task04 Hippocampus.

``search_study.py`` found its proxy (240 iterations of 32^3) to be noise. This benchmark measures
why, and what a search could gain, on the study's split: 200 cases in dataset order, the last 40
held out and scored once, at the end, by the models of part 6 (nothing is chosen on them); the
other 160 are the search's (128 train, 32 validate).

1. Noise ceiling of the proxy: ``NOISE_TOPOLOGIES`` topologies of the study (evenly spaced over
   its ranking) trained twice at the study's proxy, seeds 0 and 1; seed-to-seed Spearman.
2. Fidelity ladder: 12 of them (spread over the study's three score groups and over three
   K-means clusters) and C2FNAS-Panc's topology, trained to ``--long`` iterations at the search
   patch, every 250 iterations scored on the 32 validation cases (hard Dice, soft Dice,
   cross-entropy); 6 of them with a second seed. Each cheap score against the long one.
3. Smoothness: long-score difference against code distance.
4. Spread: best minus median, best minus C2FNAS-Panc's topology.
5. Strategies on a surrogate of the measured landscape (``c2fnas.search.simulate``).
6. A fair peer: the best topology found, C2FNAS-Panc and DynUNet with its filters scaled to
   C2FNAS-Panc's MACs, two training seeds each at the long schedule on the 160 cases, and the
   full DynUNet at C2FNAS-Panc's wall time; per-case Dice on the 40 held-out cases.
7. The supernet: the fine stage on C2FNAS-Panc's topology at ``--supernet-iterations`` (the
   supernet trains twice that), its scores of ``--colourings`` colourings against the same
   colourings trained stand-alone with two seeds (whose agreement is the ceiling).

Every trained network's numbers are recorded, as it finishes, in ``--records`` (in the repository,
so a run that spans sessions resumes from a fresh clone: commit it); its weights and checkpoints
stay in ``--work`` (a rerun in the same place resumes a network mid-training). Rerunning the
command skips what is recorded. ``--until`` stops after a part. Writes
``benchmarks/results/search_landscape.json`` and ``.png`` and prints the tables.

    .venv/bin/python benchmarks/search_landscape.py        # ~150 min on 2 cores, resumable
    .venv/bin/python benchmarks/search_landscape.py --noise-topologies 4 --ladder 3 \\
        --ladder-seeds 1 --long 60 --every 20 --proxy 20 --supernet-iterations 20 \\
        --colourings 4 --work /tmp/landscape-check \\
        --records /tmp/landscape-check/records.json --output /tmp/landscape-check/out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from c2fnas.accel.precision import resolve_precision
from c2fnas.accel.process import start_governor
from c2fnas.accel.swap import accelerate
from c2fnas.costs.measure import network_step
from c2fnas.costs.profile import estimate_cost
from c2fnas.data import loader, splits
from c2fnas.data.pipeline import cached_case_ids
from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.files.atomic import write_json_atomic
from c2fnas.inference.sliding_window import predict_probabilities
from c2fnas.nn import C2FNet
from c2fnas.search.report import code_text
from c2fnas.search.strategies import topology_clusters
from c2fnas.space import Architecture, distance
from c2fnas.training import RunConfig
from c2fnas.training.loop import TrainingDiverged, fit
from c2fnas.training.run import stream_seed, train
from c2fnas.training.validation import dice_per_class

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402
import search_study  # noqa: E402
from peers import PANC, dynunet  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "search_landscape.json"
RECORDS = REPO / "benchmarks" / "results" / "search_landscape_records.json"
STUDY = REPO / "benchmarks" / "results" / "search_study.json"
PARTS = ("noise", "ladder", "peers", "supernet")
log = logging.getLogger("search_landscape")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=search_study.DATA)
    parser.add_argument("--work", type=Path, default=REPO.parent / "c2fnas-search-landscape")
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--proxy", type=int, default=240, help="the study's search iterations")
    parser.add_argument("--noise-topologies", type=int, default=24)
    parser.add_argument("--ladder", type=int, default=12, help="topologies on the ladder")
    parser.add_argument("--ladder-seeds", type=int, default=6, help="with a second seed")
    parser.add_argument("--long", type=int, default=2000, help="the long schedule's iterations")
    parser.add_argument("--every", type=int, default=250, help="ladder validation interval")
    parser.add_argument("--peer-seeds", type=int, default=2)
    parser.add_argument(
        "--supernet-iterations",
        type=int,
        default=1000,
        help="stand-alone colourings train this long (two seeds), the supernet twice that",
    )
    parser.add_argument("--colourings", type=int, default=10)
    parser.add_argument(
        "--precision", default="fp32",
        help="fp32 (default): the study's, full speed on every CPU kind this may resume on, and "
        "bf16 is only 1.17x faster at 32^3 on an AVX-512 AMD EPYC (0.052 vs 0.062 s a step)",
    )  # fmt: skip
    parser.add_argument("--until", choices=PARTS, default=PARTS[-1])
    parser.add_argument(
        "--analyse",
        action="store_true",
        help="train nothing: analyse what --records holds so far, print and write the results",
    )
    parser.add_argument("--surrogate-seeds", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("c2fnas", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    records = Records(args.records)
    if args.analyse:
        report(args, records)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    final_run, search_run = search_study.prepare(args.data, args.work)
    study = study_topologies()
    noise_set = spread_by_rank(study, args.noise_topologies)
    ladder_set = ladder_topologies(study, noise_set, args.ladder)
    parts = PARTS[: PARTS.index(args.until) + 1]

    # a SIGTERM (or Ctrl-C) still records this invocation's minutes: what a resume adds up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    completed = False
    try:
        train_parts(args, records, parts, final_run, search_run, study, noise_set, ladder_set)
        completed = True
    finally:
        minutes = records.add_invocation(
            machine.describe(), time.perf_counter() - started, parts, completed
        )
    log.info("this invocation: %.1f min; all invocations %.1f min", minutes, records.minutes())
    report(args, records)


def train_parts(
    args: argparse.Namespace, records: Records, parts: tuple[str, ...], final_run: Path,
    search_run: Path, study: dict[tuple[int, ...], float], noise_set: list[tuple[int, ...]],
    ladder_set: list[tuple[int, ...]],
) -> None:  # fmt: skip
    """Train (or skip, when recorded) every network of ``parts``, in order."""
    panc = Architecture.load(PANC)
    proxy = proxy_config(args)
    for seed in (0, 1):
        for index, levels in enumerate(noise_set):
            key = f"proxy/{code_text(levels)}/seed{seed}"
            if key not in records:
                log.info("noise ceiling %d/%d, seed %d: %s", index + 1, len(noise_set), seed, key)
                records.add(key, train_proxy(search_run, args.work, proxy, levels, seed))

    if "ladder" in parts:
        long = long_config(args)
        second = second_seed_topologies(ladder_set, study, args.ladder_seeds)
        runs = [(levels, 0) for levels in [*ladder_set, panc.levels]]
        runs += [(levels, 1) for levels in second]
        for index, (levels, seed) in enumerate(runs):
            key = f"long/{code_text(levels)}/seed{seed}"
            if key not in records:
                log.info("ladder %d/%d: %s", index + 1, len(runs), key)
                architecture = Architecture.coarse(levels, args.width)
                records.add(key, train_ladder(search_run, args.work, long, architecture, seed,
                                              args.every))  # fmt: skip

    if "peers" in parts:
        peers(args, records, final_run, long_config(args), ladder_set, panc)

    if "supernet" in parts:
        supernet(args, records, search_run, panc)


# ---------------------------------------------------------------- records


class Records:
    """Every trained network's numbers, keyed ``part/what/seed``, written after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = (
            json.loads(path.read_text()) if path.is_file() else {"runs": {}, "invocations": []}
        )

    def __contains__(self, key: str) -> bool:
        return key in self.data["runs"]

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self.data["runs"][key]

    def add(self, key: str, record: dict[str, Any]) -> None:
        machine_kind = {"cpu": machine.cpu_model(), "flags": machine.cpu_flags()}
        self.data["runs"][key] = {**record, **machine_kind}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)

    def supersede(self, key: str, new_key: str) -> None:
        """Keep ``key``'s record under ``new_key`` (for the history) and free ``key``."""
        self.data["runs"][new_key] = self.data["runs"].pop(key)
        write_json_atomic(self.path, self.data)

    def drop(self, key: str) -> None:
        """Forget a record derived from others (it is made again from them)."""
        if self.data["runs"].pop(key, None) is not None:
            write_json_atomic(self.path, self.data)

    def add_invocation(
        self, described: dict[str, Any], seconds: float, parts: tuple, completed: bool
    ) -> float:
        minutes = round(seconds / 60, 1)
        self.data["invocations"].append({
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": described,
            "minutes": minutes, "parts": list(parts), "completed": completed,
        })  # fmt: skip
        write_json_atomic(self.path, self.data)
        return minutes

    def minutes(self) -> float:
        return round(sum(item["minutes"] for item in self.data["invocations"]), 1)


# ---------------------------------------------------------------- which topologies


def study_topologies() -> dict[tuple[int, ...], float]:
    """The 44 topologies the study trained, with their proxy score (best validation)."""
    study = json.loads(STUDY.read_text())
    scores: dict[tuple[int, ...], float] = {}
    for run in study["coarse"]["runs"]:
        for candidate in run["candidates"]:
            if candidate["score"] is not None:
                scores[tuple(candidate["levels"])] = float(candidate["score"])
    return scores


def ranked(study: dict[tuple[int, ...], float]) -> list[tuple[int, ...]]:
    return sorted(study, key=lambda levels: (study[levels], levels))


def spread_by_rank(study: dict[tuple[int, ...], float], count: int) -> list[tuple[int, ...]]:
    """``count`` topologies evenly spaced over the study's ranking (all three score groups)."""
    order = ranked(study)
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, count)).astype(int))
    return [order[i] for i in picks]


def score_group(score: float) -> int:
    """The study's three proxy groups: nothing learned, one class, both (0 / ~0.25 / >= 0.45)."""
    return 0 if score < 0.1 else 1 if score < 0.4 else 2


def ladder_topologies(
    study: dict[tuple[int, ...], float], pool: list[tuple[int, ...]], count: int
) -> list[tuple[int, ...]]:
    """``count`` of ``pool``: as many from each score group, taking the clusters of K-means
    (k = 3 over the 924 codes) in turn within a group, then the rank order."""
    clusters = topology_clusters(seed=0, clusters=3)
    groups: dict[int, list[tuple[int, ...]]] = {0: [], 1: [], 2: []}
    for levels in pool:
        groups[score_group(study[levels])].append(levels)
    chosen: list[tuple[int, ...]] = []
    per_group = [count // 3 + (1 if g < count % 3 else 0) for g in range(3)]
    for group, members in groups.items():
        by_cluster: dict[int, list[tuple[int, ...]]] = {}
        for levels in members:
            by_cluster.setdefault(clusters[levels], []).append(levels)
        queues = [by_cluster[c] for c in sorted(by_cluster)]
        picked: list[tuple[int, ...]] = []
        while len(picked) < min(per_group[group], len(members)):
            for queue in queues:
                if queue and len(picked) < per_group[group]:
                    picked.append(queue.pop(len(queue) // 2))
        chosen += picked
    leftovers = {levels: study[levels] for levels in pool if levels not in chosen}
    if len(chosen) < count and leftovers:  # a group had too few members
        chosen += spread_by_rank(leftovers, count - len(chosen))
    return chosen


def second_seed_topologies(
    ladder: list[tuple[int, ...]], study: dict[tuple[int, ...], float], count: int
) -> list[tuple[int, ...]]:
    """``count`` ladder topologies for a second seed, evenly over the study's ranking."""
    return spread_by_rank({levels: study[levels] for levels in ladder}, count)


# ---------------------------------------------------------------- configurations


def proxy_config(args: argparse.Namespace) -> RunConfig:
    """The study's search schedule (validated twice; the score is the best validation)."""
    namespace = argparse.Namespace(
        iterations=args.proxy, width=args.width, clusters=3, budget=6, colourings=20,
        retrain_iterations=args.long,
    )  # fmt: skip
    return search_study.study_config(namespace).with_fields("training", precision=args.precision)


def long_config(args: argparse.Namespace) -> RunConfig:
    """The long schedule: the study's deployment schedule (warm-up, decays at 60% and 85%) at
    ``--long`` iterations, checkpointed every ``--every``; ``fit`` validates only at the end (the
    ladder scores itself on the way)."""
    config = proxy_config(args)
    return config.with_fields(
        "training", validate_every=args.long, checkpoint_every=min(args.every, args.long)
    )


# ---------------------------------------------------------------- training


def train_proxy(
    search_run: Path, work: Path, config: RunConfig, levels: tuple[int, ...], seed: int
) -> dict[str, Any]:
    """One candidate at the study's proxy, trained as the coarse stage trains it."""
    out = work / "proxy" / f"{code_text(levels)}_seed{seed}"
    config = config.with_fields("training", seed=seed)  # seeds the weights and the patches
    architecture = Architecture.coarse(levels, config.search.width)
    try:
        result = train(architecture, search_run, SEARCH_FOLD, config.for_search(), out, resume=True,
                       accelerated=True, governor=start_governor())  # fmt: skip
    except TrainingDiverged as error:  # the search records such a candidate as failed
        log.warning("  %s", error)
        return {"levels": list(levels), "seed": seed, "diverged": str(error)}
    return {"levels": list(levels), "seed": seed, **search_study.training_scores(out),
            "seconds": round(result.seconds, 1)}  # fmt: skip


def case_scores(
    network: nn.Module, cases: list[Any], classes: int, config: RunConfig, precision: str
) -> dict[str, float]:
    """Hard Dice, soft Dice (probabilities, foreground classes) and cross-entropy, each the mean
    over ``cases`` (whole preprocessed cases, sliding window)."""
    hard, soft, entropy = [], [], []
    was_training = network.training
    network.eval()
    with torch.no_grad():
        for _, image, label in cases:
            probabilities = predict_probabilities(
                network, image, config.data.patch, config.training.stride, precision,
                config.training.window_batch,
            )[0]  # fmt: skip
            target = label[0, 0]
            hard.append(float(dice_per_class(probabilities.argmax(0), target, classes).mean()))
            per_class = []
            for value in range(1, classes):
                p, y = probabilities[value], (target == value).float()
                per_class.append(float(2 * (p * y).sum() / (p.sum() + y.sum()).clamp_min(1e-6)))
            soft.append(statistics.mean(per_class))
            picked = probabilities.gather(0, target[None].long()).clamp_min(1e-6)
            entropy.append(float(-picked.log().mean()))
    network.train(was_training)
    return {"hard": statistics.mean(hard), "soft": statistics.mean(soft),
            "loss": statistics.mean(entropy)}  # fmt: skip


def train_ladder(
    search_run: Path, work: Path, config: RunConfig, architecture: Architecture, seed: int,
    every: int,
) -> dict[str, Any]:  # fmt: skip
    """Train ``architecture`` to the long schedule, scoring it every ``every`` iterations."""
    out = work / "long" / f"{code_text(architecture.levels)}_seed{seed}"
    trajectory_file = out / "trajectory.json"
    trajectory: dict[str, Any] = (
        json.loads(trajectory_file.read_text()) if trajectory_file.is_file() else {}
    )
    config = config.with_fields("training", seed=seed)
    plan = Plan.load(search_run)
    fold = splits.load_or_create(search_run, cached_case_ids(search_run))[SEARCH_FOLD]
    cases = list(loader.validation_cases(search_run, fold.val))
    precision = resolve_precision(config.training.precision, torch.device("cpu"))
    torch.manual_seed(seed)
    network = C2FNet(architecture, plan.in_channels, plan.num_classes)

    def progress(done: int, total: int, _: dict[str, Any]) -> None:
        if done % every == 0 or done == total:
            scores = case_scores(network, cases, plan.num_classes, config, precision)
            trajectory[str(done)] = scores
            write_json_atomic(trajectory_file, trajectory)
            log.info("  iteration %d: hard %.4f soft %.4f loss %.4f", done, *scores.values())

    result = train(architecture, search_run, SEARCH_FOLD, config, out, resume=True,
                   network=network, progress=progress, accelerated=True,
                   governor=start_governor())  # fmt: skip
    points = {int(k): v for k, v in trajectory.items()}
    return {"levels": list(architecture.levels), "seed": seed, "seconds": round(result.seconds, 1),
            "trajectory": {str(k): points[k] for k in sorted(points)}}  # fmt: skip


# ---------------------------------------------------------------- part 6: a fair peer


def matched_dynunet_base(in_channels: int, classes: int, patch: tuple[int, ...],
                         target_macs: int) -> tuple[int, int]:  # fmt: skip
    """DynUNet's first-stage filters whose MACs per patch come closest to ``target_macs``."""
    best = None
    for base in range(2, 33):
        network = dynunet(in_channels, classes, base=base)
        macs = estimate_cost(network, (1, in_channels, *patch)).macs
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (base, macs)
    assert best is not None
    return best


def step_seconds(network: nn.Module, config: RunConfig, classes: int, steps: int = 8) -> float:
    """Median seconds of a training step of ``network`` on random data, as ``fit`` runs it."""
    device = torch.device("cpu")
    precision = resolve_precision(config.training.precision, device)
    _, step = network_step(network, 1, classes, config.data.patch, config.data.batch_size,
                           precision, device)  # fmt: skip
    times = [step() for _ in range(steps + 2)]
    return statistics.median(times[2:])


def retrain_peer(
    final_run: Path, work: Path, config: RunConfig, key: str, build: Callable[[], nn.Module],
    architecture: Architecture | None, seed: int, iterations: int,
) -> dict[str, Any]:  # fmt: skip
    """Train a model on the 160 cases for ``iterations`` and score the 40 held-out cases."""
    plan = Plan.load(final_run)
    fold = splits.load_or_create(final_run, cached_case_ids(final_run))[search_study.HELD_OUT_FOLD]
    config = config.with_fields(
        "training", seed=seed, iterations=iterations, validate_every=iterations,
        milestones=sorted({max(1, round(iterations * f)) for f in (0.6, 0.85)}),
        warmup_iterations=max(1, iterations // 20), checkpoint_every=max(1, iterations // 4),
    )  # fmt: skip
    data = config.data
    torch.manual_seed(seed)
    network = accelerate(build())

    def batches(start: int) -> Any:
        return loader.train_batches(
            final_run, fold.train, data.patch, data.batch_size, stream_seed(seed, 0, start),
            data.foreground_oversample, data.workers,
        )  # fmt: skip

    result = fit(
        network, architecture, batches, lambda: loader.validation_cases(final_run, fold.val),
        config, work / "peers" / f"{key}_seed{seed}", resume=True, device=torch.device("cpu"),
        governor=start_governor(torch.device("cpu")),
        model_info={"study": key, "in_channels": plan.in_channels,
                    "num_classes": plan.num_classes, "plan": plan.model_dump(mode="json")},
    )  # fmt: skip
    per_case = search_study.per_case_dice(network, final_run, fold.val, config, plan.num_classes)
    log.info("  %s seed %d: held-out mean Dice %.4f", key, seed, statistics.mean(per_case))
    return {"key": key, "seed": seed, "iterations": iterations, "per_case": per_case,
            "mean_dice": statistics.mean(per_case), "train_seconds": round(result.seconds, 1),
            "params_millions": sum(p.numel() for p in network.parameters()) / 1e6}  # fmt: skip


def best_long_topology(records: Records, ladder: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The ladder topology with the highest final hard Dice at the long schedule (seed mean)."""

    def long_score(levels: tuple[int, ...]) -> float:
        finals = [final_hard(records[key]) for key in records.data["runs"]
                  if key.startswith(f"long/{code_text(levels)}/")]  # fmt: skip
        return statistics.mean(finals)

    return max(ladder, key=long_score)


def final_hard(record: dict[str, Any]) -> float:
    trajectory = record["trajectory"]
    return float(trajectory[max(trajectory, key=int)]["hard"])


def peers(
    args: argparse.Namespace, records: Records, final_run: Path, config: RunConfig,
    ladder: list[tuple[int, ...]], panc: Architecture,
) -> None:  # fmt: skip
    plan = Plan.load(final_run)
    channels, classes = plan.in_channels, plan.num_classes
    patch = tuple(config.data.patch)
    panc_width = panc.with_width(args.width)
    target = estimate_cost(C2FNet(panc_width, channels, classes), (1, channels, *patch)).macs
    if "peers/costs" not in records:
        base, macs = matched_dynunet_base(channels, classes, patch, target)
        timing = {
            "panc": step_seconds(C2FNet(panc_width, channels, classes), config, classes),
            "dynunet": step_seconds(dynunet(channels, classes), config, classes),
            "dynunet_matched": step_seconds(dynunet(channels, classes, base=base), config, classes),
        }
        records.add("peers/costs", {
            "panc_macs": target, "matched_base": base, "matched_macs": macs,
            "full_macs": estimate_cost(dynunet(channels, classes), (1, channels, *patch)).macs,
            "step_seconds": timing,
        })  # fmt: skip
    costs = records["peers/costs"]
    base = costs["matched_base"]
    equal_time = round(args.long * costs["step_seconds"]["panc"] / costs["step_seconds"]["dynunet"])
    best = Architecture.coarse(best_long_topology(records, ladder), args.width)
    models: list[tuple[str, Callable[[], nn.Module], Architecture | None, int]] = [
        ("best-topology", lambda: C2FNet(best, channels, classes), best, args.long),
        ("c2fnas-panc", lambda: C2FNet(panc_width, channels, classes), panc_width, args.long),
        ("dynunet-matched", lambda: dynunet(channels, classes, base=base), None, args.long),
        ("dynunet-equal-time", lambda: dynunet(channels, classes), None, equal_time),
    ]
    for seed in range(args.peer_seeds):
        for name, build, architecture, iterations in models:
            key = f"peers/{name}/seed{seed}"
            if key not in records:
                log.info("fair peer: %s, seed %d, %d iterations", name, seed, iterations)
                record = retrain_peer(final_run, args.work, config, name, build, architecture,
                                      seed, iterations)  # fmt: skip
                if architecture is not None:
                    record["levels"] = list(architecture.levels)
                records.add(key, record)


# ---------------------------------------------------------------- part 7: the supernet


def supernet_config(args: argparse.Namespace) -> RunConfig:
    """The fine stage at ``--supernet-iterations`` (the supernet trains twice that), scoring
    ``--colourings`` colourings; stand-alone colourings train the search schedule."""
    namespace = argparse.Namespace(
        iterations=args.supernet_iterations, width=args.width, clusters=3, budget=6,
        colourings=args.colourings, retrain_iterations=args.long,
    )  # fmt: skip
    config = search_study.study_config(namespace).with_fields("training", precision=args.precision)
    return config.with_fields("search", fine_candidates=args.colourings)


def supernet(
    args: argparse.Namespace, records: Records, search_run: Path, panc: Architecture
) -> None:
    """The fine stage on C2FNAS-Panc's topology (as a plan without a coarse stage runs it): the
    supernet's scores of ``--colourings`` colourings, and each colouring trained stand-alone with
    two seeds (their agreement is the ceiling the supernet's ranking is read against)."""
    from c2fnas.search import fine

    config = supernet_config(args)
    topology = Architecture.coarse(panc.levels, args.width)
    colourings = fine.sample_colourings(args.colourings, config.training.seed)
    if "supernet/scores" not in records:
        job = fine.make_job(search_run, topology, config, accelerated=True, poll_seconds=0.5)
        log.info(
            "supernet of %s, %d iterations", code_text(panc.levels), 2 * args.supernet_iterations
        )
        started = time.perf_counter()
        fine.train_supernet(job, governor=start_governor())
        snapshot = fine.run_fine(job, workers=1)
        scores = {tuple(code): score for code, score in snapshot.finished}
        records.add("supernet/scores", {
            "levels": list(panc.levels), "iterations": 2 * args.supernet_iterations,
            "seconds": round(time.perf_counter() - started, 1),
            "scores": {"".join(op[0] for op in fine.decode(code)): scores[tuple(code)]
                       for code in colourings},
        })  # fmt: skip
    for seed in (0, 1):
        for index, code in enumerate(colourings):
            ops = fine.decode(code)
            key = f"alone/{''.join(op[0] for op in ops)}/seed{seed}"
            if key in records:
                continue
            log.info("stand-alone colouring %d/%d, seed %d", index + 1, len(colourings), seed)
            out = args.work / "alone" / f"{key.split('/')[1]}_seed{seed}"
            seeded = config.with_fields("training", seed=seed)
            try:
                train(topology.with_ops(ops), search_run, SEARCH_FOLD, seeded.for_search(), out,
                      resume=True, accelerated=True, governor=start_governor())  # fmt: skip
                records.add(key, {"ops": list(ops), "seed": seed,
                                  **search_study.training_scores(out)})  # fmt: skip
            except TrainingDiverged as error:
                records.add(key, {"ops": list(ops), "seed": seed, "diverged": str(error)})


# ---------------------------------------------------------------- analysis


def report(args: argparse.Namespace, records: Records) -> None:
    """Analyse what ``records`` holds (parts not yet trained are left out), print the tables,
    write the JSON and the figure."""
    study = study_topologies()
    noise_set = spread_by_rank(study, args.noise_topologies)
    ladder = [*ladder_topologies(study, noise_set, args.ladder), Architecture.load(PANC).levels]
    result: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machines": sorted(
            {f"{r['cpu']} {'+'.join(r['flags'])}" for r in records.data["runs"].values()}
        ),
        "minutes": records.minutes(),
        "invocations": records.data["invocations"],
    }
    proxy = proxy_scores(records, noise_set)
    result["noise_ceiling"] = noise_ceiling(proxy, study)
    long = long_scores(records, ladder)
    if long:
        result["long_noise"] = long_noise(long)
        result["fidelity"] = fidelity(records, long, proxy, args.every)
        result["smoothness"] = {
            "long": smoothness({levels: item["mean"] for levels, item in long.items()}),
            "proxy": smoothness({levels: statistics.mean(v) for levels, v in proxy.items()
                                 if len(v) == 2}),
        }  # fmt: skip
        result["spread"] = spread(long, Architecture.load(PANC).levels)
        noise_sd = result["long_noise"]["seed_sd"]
        result["surrogate"] = surrogate_study(long, noise_sd, args.surrogate_seeds)
    result["peers"] = peer_results(records)
    result["supernet"] = supernet_results(records)
    print_report(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output, result)
    plot(result, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")


def rank_agreement(x: list[float], y: list[float], resamples: int = 2000) -> dict[str, Any]:
    """Spearman and Kendall between ``x`` and ``y``, with 95% bootstrap intervals over items."""
    from scipy.stats import kendalltau, spearmanr

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    result: dict[str, Any] = {"n": len(a)}
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    for name, statistic in (("spearman", spearmanr), ("kendall", kendalltau)):
        value = statistic(a, b)
        boot = [statistic(a[p], b[p]).statistic for p in picks]
        boot = [v for v in boot if np.isfinite(v)]
        low, high = np.percentile(boot, [2.5, 97.5]) if boot else (np.nan, np.nan)
        result[name] = {"value": float(value.statistic), "p": float(value.pvalue),
                        "low": float(low), "high": float(high)}  # fmt: skip
    return result


def proxy_scores(records: Records, noise_set: list[tuple[int, ...]]) -> dict[tuple, list[float]]:
    """Per topology, its proxy scores by seed (best validation; a diverged run scores 0)."""
    scores: dict[tuple, list[float]] = {}
    for levels in noise_set:
        for seed in (0, 1):
            key = f"proxy/{code_text(levels)}/seed{seed}"
            if key in records:
                scores.setdefault(levels, []).append(float(records[key].get("best", 0.0)))
    return scores


def noise_ceiling(proxy: dict[tuple, list[float]], study: dict[tuple, float]) -> dict[str, Any]:
    pairs = {levels: v for levels, v in proxy.items() if len(v) == 2}
    result: dict[str, Any] = {"topologies": len(pairs)}
    if len(pairs) < 3:
        return result
    first = [v[0] for v in pairs.values()]
    second = [v[1] for v in pairs.values()]
    differences = np.subtract(first, second)
    result.update(
        seed_to_seed=rank_agreement(first, second),
        mean_abs_difference=float(np.abs(differences).mean()),
        seed_sd=float(np.sqrt((differences**2).mean() / 2)),
        group_changed=sum(
            score_group(a) != score_group(b) for a, b in zip(first, second, strict=True)
        ),
        against_study=rank_agreement(first, [study[levels] for levels in pairs]),
        spread_sd=float(np.std(first + second)),
    )  # fmt: skip
    return result


def long_scores(records: Records, ladder: list[tuple[int, ...]]) -> dict[tuple, dict[str, Any]]:
    """Per ladder topology trained so far: its final hard Dice per seed and their mean."""
    scores = {}
    for levels in ladder:
        keys = [f"long/{code_text(levels)}/seed{seed}" for seed in (0, 1)]
        finals = [final_hard(records[key]) for key in keys if key in records]
        if finals:
            scores[levels] = {"seeds": finals, "mean": statistics.mean(finals)}
    return scores


def long_noise(long: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """The long schedule's own seed noise, from the topologies trained with two seeds."""
    pairs = [item["seeds"] for item in long.values() if len(item["seeds"]) == 2]
    if not pairs:
        return {"topologies": 0, "seed_sd": 0.0}
    differences = np.array([a - b for a, b in pairs])
    result = {
        "topologies": len(pairs),
        "mean_abs_difference": float(np.abs(differences).mean()),
        "seed_sd": float(np.sqrt((differences**2).mean() / 2)),
        "spread_sd": float(np.std([item["mean"] for item in long.values()])),
    }
    if len(pairs) >= 3:
        result["seed_to_seed"] = rank_agreement([a for a, _ in pairs], [b for _, b in pairs])
    return result


def cheap_scores(trajectory: dict[str, dict[str, float]], every: int) -> dict[str, float]:
    """What a cheaper search could score a candidate by, from one long run's trajectory."""
    points = {int(k): v for k, v in trajectory.items()}
    scores = {}
    for budget in (every, 2 * every, 4 * every):
        if budget in points:
            scores[f"hard Dice @{budget}"] = points[budget]["hard"]
            scores[f"soft Dice @{budget}"] = points[budget]["soft"]
            scores[f"-loss @{budget}"] = -points[budget]["loss"]
            so_far = [points[k]["hard"] for k in sorted(points) if k <= budget]
            scores[f"best hard so far @{budget} (search.score best)"] = max(so_far)
            scores[f"mean of last 3 hard @{budget}"] = statistics.mean(so_far[-3:])
    return scores


def fidelity(
    records: Records, long: dict[tuple, dict[str, Any]], proxy: dict[tuple, list[float]],
    every: int,
) -> dict[str, Any]:  # fmt: skip
    """Each cheap score (seed 0's run) against the long score (mean of the seeds)."""
    columns: dict[str, dict[tuple, float]] = {}
    for levels in long:
        trajectory = records[f"long/{code_text(levels)}/seed0"]["trajectory"]
        for name, value in cheap_scores(trajectory, every).items():
            columns.setdefault(name, {})[levels] = value
        if levels in proxy:
            columns.setdefault("proxy 240 it (seed 0)", {})[levels] = proxy[levels][0]
            if len(proxy[levels]) == 2:
                columns.setdefault("proxy 240 it (2 seeds)", {})[levels] = statistics.mean(
                    proxy[levels]
                )
    result = {}
    for name, values in columns.items():
        if len(values) >= 4:
            result[name] = rank_agreement(list(values.values()),
                                          [long[levels]["mean"] for levels in values])  # fmt: skip
    return result


def smoothness(scores: dict[tuple, float]) -> dict[str, Any]:
    """Score difference against code distance over all pairs: is Algorithm 1's premise true?"""
    from scipy.stats import spearmanr

    codes = list(scores)
    pairs = [(distance(a, b), abs(scores[a] - scores[b]))
             for i, a in enumerate(codes) for b in codes[i + 1:]]  # fmt: skip
    if len(pairs) < 3:
        return {"pairs": len(pairs)}
    distances, differences = np.array(pairs).T
    median = float(np.median(distances))
    rho = spearmanr(distances, differences)
    return {
        "pairs": len(pairs),
        "spearman": float(rho.statistic), "p": float(rho.pvalue),
        "median_distance": median,
        "near_mean_difference": float(differences[distances <= median].mean()),
        "far_mean_difference": float(differences[distances > median].mean()),
        "points": [[float(d), float(v)] for d, v in pairs],
    }  # fmt: skip


def spread(long: dict[tuple, dict[str, Any]], panc: tuple[int, ...]) -> dict[str, Any]:
    means = {levels: item["mean"] for levels, item in long.items()}
    best = max(means, key=means.__getitem__)
    result = {
        "best_levels": list(best), "best": means[best],
        "median": float(np.median(list(means.values()))),
        "best_minus_median": means[best] - float(np.median(list(means.values()))),
    }  # fmt: skip
    if panc in means:
        result.update(panc=means[panc], best_minus_panc=means[best] - means[panc])
    return result


def surrogate_study(long: dict[tuple, dict[str, Any]], noise: float, seeds: int) -> dict[str, Any]:
    """Algorithm 1, random search and aging evolution on the measured landscape."""
    from c2fnas.costs.schedule import MAX_CLUSTERS, NETWORKS_PER_CLUSTER
    from c2fnas.search.simulate import Surrogate
    from c2fnas.search.strategies import CoarseToFine, RandomSearch, RegularizedEvolution

    surrogate = Surrogate({levels: item["mean"] for levels, item in long.items()}, noise)
    rows = []
    for budget in (6, 10, 20, 30, 50):
        clusters = max(1, min(MAX_CLUSTERS, budget // NETWORKS_PER_CLUSTER))  # as planned
        strategies = {
            "c2f": lambda seed, k=clusters: CoarseToFine(seed=seed, clusters=k),
            "random": lambda seed: RandomSearch(),
            "evolution": lambda seed: RegularizedEvolution(),
        }
        for name, strategy in strategies.items():
            outcome = surrogate.outcomes(strategy, budget, seeds)
            rows.append({"strategy": name, "budget": budget, "clusters": clusters,
                         **vars(outcome)})  # fmt: skip
    return {"noise_sd": noise, "seeds": seeds, "trained": len(long), "rows": rows}


def peer_results(records: Records) -> dict[str, Any]:
    models = [dict(r, name=r["key"]) for key, r in records.data["runs"].items()
              if key.startswith("peers/") and key != "peers/costs"]  # fmt: skip
    if not models:
        return {}
    names = list(dict.fromkeys(m["name"] for m in models))
    result: dict[str, Any] = {
        "costs": records.data["runs"].get("peers/costs"),
        "models": {},
        "comparisons": {},
    }
    for name in names:
        seeds = [m for m in models if m["name"] == name]
        result["models"][name] = {
            "iterations": seeds[0]["iterations"],
            "params_millions": seeds[0]["params_millions"],
            "train_seconds": [m["train_seconds"] for m in seeds],
            "over_seeds": search_study.interval([m["mean_dice"] for m in seeds]),
            "over_cases": search_study.interval_of_cases(search_study.by_name(models, name)),
        }
    pairs = [
        ("best-topology", "c2fnas-panc"),
        ("c2fnas-panc", "dynunet-matched"),
        ("c2fnas-panc", "dynunet-equal-time"),
        ("best-topology", "dynunet-matched"),
    ]
    for a, b in pairs:
        if a in names and b in names:
            result["comparisons"][f"{a} - {b}"] = search_study.paired_bootstrap(
                search_study.by_name(models, a), search_study.by_name(models, b)
            )
    return result


def supernet_results(records: Records) -> dict[str, Any]:
    """The supernet's ranking of colourings against stand-alone training, and the stand-alone
    seed-to-seed agreement (the noise ceiling of that comparison)."""
    if "supernet/scores" not in records:
        return {}
    scores = records["supernet/scores"]["scores"]
    alone: dict[str, list[float]] = {}
    for key in scores:
        for seed in (0, 1):
            if f"alone/{key}/seed{seed}" in records:
                alone.setdefault(key, []).append(
                    records[f"alone/{key}/seed{seed}"].get("best", 0.0)
                )
    result: dict[str, Any] = {
        "colourings": len(scores),
        "supernet_iterations": records["supernet/scores"]["iterations"],
    }
    both = [key for key, values in alone.items() if len(values) == 2]
    if len(alone) >= 4:
        keys = list(alone)
        result["supernet_vs_alone"] = rank_agreement(
            [scores[k] for k in keys], [statistics.mean(alone[k]) for k in keys]
        )
    if len(both) >= 4:
        result["alone_seed_to_seed"] = rank_agreement([alone[k][0] for k in both],
                                                      [alone[k][1] for k in both])  # fmt: skip
    return result


def _interval(item: dict[str, Any]) -> str:
    low, high = item.get("low", np.nan), item.get("high", np.nan)
    return f"{item['value']:+.2f} [{low:+.2f}, {high:+.2f}]" if "value" in item else "-"


def print_report(result: dict[str, Any]) -> None:
    print(f"\nsearch landscape, {result['minutes']} min over {len(result['invocations'])} "
          f"invocation(s) on {'; '.join(result['machines'])}")  # fmt: skip
    noise = result["noise_ceiling"]
    if "seed_to_seed" in noise:
        print(f"\n1. proxy noise ceiling over {noise['topologies']} topologies: seed-to-seed "
              f"Spearman {_interval(noise['seed_to_seed']['spearman'])}, Kendall "
              f"{_interval(noise['seed_to_seed']['kendall'])}; mean |difference| "
              f"{noise['mean_abs_difference']:.3f} (seed sd {noise['seed_sd']:.3f} against a "
              f"spread of {noise['spread_sd']:.3f}); score group changed for "
              f"{noise['group_changed']}; "
              f"against the study's scores Spearman "
              f"{_interval(noise['against_study']['spearman'])}")  # fmt: skip
    if "fidelity" in result:
        long = result["long_noise"]
        print(f"\n2. long schedule's seed noise over {long['topologies']} topologies: mean "
              f"|difference| {long.get('mean_abs_difference', np.nan):.3f}, seed sd "
              f"{long['seed_sd']:.3f} against a spread of {long.get('spread_sd', np.nan):.3f}"
              + (f", seed-to-seed Spearman {_interval(long['seed_to_seed']['spearman'])}"
                 if "seed_to_seed" in long else ""))  # fmt: skip
        print("\n| cheap score | n | Spearman with the long score [95%] | Kendall [95%] |")
        print("| --- | ---: | --- | --- |")
        for name, item in result["fidelity"].items():
            print(f"| {name} | {item['n']} | {_interval(item['spearman'])} | "
                  f"{_interval(item['kendall'])} |")  # fmt: skip
        for name, item in result["smoothness"].items():
            if "spearman" in item:
                print(f"\n3. smoothness ({name}): {item['pairs']} pairs, Spearman(distance, "
                      f"|difference|) {item['spearman']:+.3f} (p {item['p']:.3f}); pairs within "
                      f"distance {item['median_distance']:.2f} differ by "
                      f"{item['near_mean_difference']:.3f}, farther ones by "
                      f"{item['far_mean_difference']:.3f}")  # fmt: skip
        s = result["spread"]
        print(f"\n4. spread: best {s['best']:.3f} ({code_text(tuple(s['best_levels']))}), "
              f"best - median {s['best_minus_median']:+.3f}"
              + (f", best - C2FNAS-Panc's topology {s['best_minus_panc']:+.3f}" if "panc" in s
                 else ""))  # fmt: skip
        print(f"\n5. strategies on the surrogate ({result['surrogate']['trained']} trained "
              f"topologies, noise sd {result['surrogate']['noise_sd']:.3f}, "
              f"{result['surrogate']['seeds']} seeds)")  # fmt: skip
        print("| budget | strategy | clusters | P(best) | P(top quarter) | mean regret |")
        print("| ---: | --- | ---: | ---: | ---: | ---: |")
        for row in result["surrogate"]["rows"]:
            print(f"| {row['budget']} | {row['strategy']} | {row['clusters']} | "
                  f"{row['chance_best']:.2f} | {row['chance_top_quarter']:.2f} | "
                  f"{row['mean_regret']:.4f} |")  # fmt: skip
    peers = result["peers"]
    if peers:
        print("\n6. held-out Dice (40 cases)")
        print("| model | iterations | params (M) | mean over seeds [95% t] | over cases [95%] |")
        print("| --- | ---: | ---: | --- | --- |")
        for name, item in peers["models"].items():
            seeds, cases = item["over_seeds"], item["over_cases"]
            print(f"| {name} | {item['iterations']} | {item['params_millions']:.2f} | "
                  f"{seeds['mean']:.4f} [{seeds['low']:.4f}, {seeds['high']:.4f}] (n "
                  f"{seeds['n']}) | {cases['mean']:.4f} [{cases['low']:.4f}, "
                  f"{cases['high']:.4f}] |")  # fmt: skip
        for name, item in peers["comparisons"].items():
            print(f"{name}: {item['difference']:+.4f} [{item['low']:+.4f}, {item['high']:+.4f}] "
                  f"(p not better {item['p_not_better']:.3f})")  # fmt: skip

    fine = result["supernet"]
    if "supernet_vs_alone" in fine:
        print(f"\n7. supernet ({fine['supernet_iterations']} iterations) against stand-alone "
              f"training, {fine['supernet_vs_alone']['n']} colourings: Spearman "
              f"{_interval(fine['supernet_vs_alone']['spearman'])}, Kendall "
              f"{_interval(fine['supernet_vs_alone']['kendall'])}"
              + (f"; stand-alone seed-to-seed Spearman "
                 f"{_interval(fine['alone_seed_to_seed']['spearman'])}"
                 if "alone_seed_to_seed" in fine else ""))  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    fidelity_axes, smooth_axes, surrogate_axes, peer_axes = axes
    if "fidelity" in result:
        names = list(result["fidelity"])
        values = [result["fidelity"][n]["spearman"] for n in names]
        means = [v["value"] for v in values]
        errors = [[m - v["low"] for m, v in zip(means, values, strict=True)],
                  [v["high"] - m for m, v in zip(means, values, strict=True)]]  # fmt: skip
        fidelity_axes.errorbar(means, range(len(names)), xerr=errors, fmt="o", capsize=3)
        fidelity_axes.set_yticks(range(len(names)), names, fontsize=7)
        fidelity_axes.axvline(0, color="grey", lw=0.5)
        fidelity_axes.set_xlabel("Spearman with the long score (95% bootstrap)")
        fidelity_axes.invert_yaxis()
        for name, item in result["smoothness"].items():
            if "points" in item:
                d, v = np.array(item["points"]).T
                smooth_axes.scatter(d, v, s=8, alpha=0.6,
                                    label=f"{name} (rho {item['spearman']:+.2f})")  # fmt: skip
        smooth_axes.set_xlabel("code distance")
        smooth_axes.set_ylabel("|score difference|")
        smooth_axes.legend(frameon=False)
        rows = result["surrogate"]["rows"]
        for name in dict.fromkeys(r["strategy"] for r in rows):
            mine = [r for r in rows if r["strategy"] == name]
            surrogate_axes.plot([r["budget"] for r in mine], [r["mean_regret"] for r in mine],
                                marker="o", label=name)  # fmt: skip
        surrogate_axes.set_xlabel("networks trained (surrogate)")
        surrogate_axes.set_ylabel("mean regret (long Dice)")
        surrogate_axes.legend(frameon=False)
    if result["peers"]:
        models = result["peers"]["models"]
        for row, item in enumerate(models.values()):
            cases = item["over_cases"]
            peer_axes.errorbar([cases["mean"]], [row], fmt="o", capsize=3,
                               xerr=[[cases["mean"] - cases["low"]],
                                     [cases["high"] - cases["mean"]]])  # fmt: skip
            for value in item["over_seeds"].get("values", []):
                peer_axes.plot(value, row, "x", color="grey")
        peer_axes.set_yticks(range(len(models)), list(models))
        peer_axes.set_xlabel("held-out Dice (95% over cases; x: seeds)")
        peer_axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
