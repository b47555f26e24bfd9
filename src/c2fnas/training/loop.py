"""The training loop: one ``fit`` for a network or a supernet, on one process or under DDP.

``fit`` takes its data as callables so it runs on in-memory tensors in tests; ``train`` (in
``c2fnas.training.run``) wires it to a run folder. Each iteration is one SGD step on one batch
(``run_step``), which may run through the network in micro-batches whose gradients add up to the
batch's (``micro_batch``: for networks that do not fit in memory otherwise); after every
``validate_every`` iterations (``validates_after``) the model is validated on whole cases and the
best and last model folders are written; every ``checkpoint_every`` iterations a resumable
checkpoint is written and the batch stream is restarted from ``batches(iteration)``, so a resumed
run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from monai.losses import DiceCELoss
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from c2fnas.accel import compile as compiling
from c2fnas.accel.precision import autocast, memory_format, resolve_precision
from c2fnas.accel.process import ThreadGovernor
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.model_folder import write_model
from c2fnas.files.run_folder import TrainingFolder
from c2fnas.space import Architecture, Op
from c2fnas.training import checkpoint as ckpt
from c2fnas.training.config import RunConfig
from c2fnas.training.deep_supervision import DeepSupervision, DeepSupervisionLoss
from c2fnas.training.errors import OutOfMemory, TrainingDiverged, first_line
from c2fnas.training.report import RunLog
from c2fnas.training.schedule import learning_rate
from c2fnas.training.validation import ValidationCase, validate

log = logging.getLogger(__name__)

BatchSource = Callable[[int], Iterator[dict[str, torch.Tensor]]]
"""Given the iteration to start from, an endless stream of ``{"image": (B, C, *patch) float32,
"label": (B, 1, *patch) int64}`` for this process."""
ValidationSource = Callable[[], Iterable[ValidationCase]]
"""This process's share of the validation cases."""
ValidationCallback = Callable[[int, float], None]
"""Called on every process after each validation, its model folders written, with (iteration,
mean validation Dice); it may raise to stop the training there (a search's pruner does)."""
OpsSampler = Callable[[random.Random], Sequence[Op]]
"""Draws the colouring a supernet trains at one iteration."""
Progress = Callable[[int, int, dict[str, float]], None]
"""Called on rank 0 after every iteration with (iterations done, total, {"loss", "lr", and
"dice": the last validation mean Dice, once there is one})."""
UNTIMED_ITERATIONS = 20
"""A process's first iterations are left out of ``Timings``: caches fill, a compiled step
compiles, the thread governor settles."""


@dataclass(frozen=True)
class Timings:
    """What this process measured so far (under DDP, the slowest process's): wall-clock seconds
    per training iteration, batch loading and checkpoints included and validations left out,
    over ``iterations`` iterations; seconds per validation."""

    step: float
    validation: float
    iterations: int


Reschedule = Callable[[int, Timings], RunConfig | None]
"""Called on every process after each checkpoint with (iterations done, ``Timings``) once the
process has timed an iteration and a validation: a configuration whose ``training`` schedule
(iterations, milestones, warm-up, intervals) replaces the current one from the next iteration,
after which it is not called again; or None to be asked at the next checkpoint."""


_ALLOCATION_FAILED = re.compile(
    r"out of memory|(can't|cannot|could not|unable to) allocate", re.IGNORECASE
)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError``, or a ``RuntimeError`` of another allocator: the
    CPU's ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ... bytes"),
    MPS's ("MPS backend out of memory")."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and _ALLOCATION_FAILED.search(str(error)) is not None
    )


T = TypeVar("T")


def with_smaller_micro_batches(attempt: Callable[[int | None], T]) -> T:
    """``attempt(micro_batch)`` until it fits in memory, halving the micro-batch each time.

    The first attempt gets None (``fit``: the checkpoint's micro-batch, else the whole batch);
    after an ``OutOfMemory`` at micro-batch m the next gets m // 2, so a batch of 8 runs as
    8, then 2 x 4, then 4 x 2, then 8 x 1: the same effective batch. An attempt should resume
    from its checkpoint (``fit(resume=True)``). Raises the ``OutOfMemory`` of micro-batch 1.
    """
    micro_batch: int | None = None
    while True:
        try:
            return attempt(micro_batch)
        except OutOfMemory as error:
            if error.micro_batch <= 1:
                raise
            micro_batch = error.micro_batch // 2
            log.warning("%s; retrying with micro-batch %d", error, micro_batch)
        # The failed attempt's network, optimizer and activations are garbage now; hand the
        # cached blocks back before the next attempt allocates.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def validates_after(done: int, iterations: int, validate_every: int) -> bool:
    """Whether ``fit`` validates after iteration ``done`` of ``iterations``: every
    ``validate_every`` iterations and after the last one."""
    return done % validate_every == 0 or done == iterations


@dataclass
class TrainResult:
    best_dice: list[float]
    """Validation Dice per foreground class of the best model."""
    best_mean: float
    best_iteration: int
    iterations: int
    seconds: float
    history: dict[str, Any] = field(default_factory=dict, repr=False)


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if _rank()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


@dataclass
class _Trainer:
    network: nn.Module
    model: nn.Module  # the network, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    loss: nn.Module
    config: RunConfig
    precision: str
    device: torch.device
    scaler: torch.amp.GradScaler | None
    sample_ops: OpsSampler | None
    sampler_rng: random.Random

    micro_batch: int | None = None
    """Samples per pass through the network; None: the whole batch in one pass."""
    eager_model: nn.Module | None = None
    """While ``model`` is compiled and has not yet finished a step: the uncompiled model, which
    the step falls back to if compiling fails."""
    compiled: bool = False
    heads: nn.Module | None = None
    """Deep supervision's heads (trained, checkpointed, never saved with the model)."""

    def run_step(self, iteration: int, batch: dict[str, torch.Tensor]) -> float:
        """One SGD step on ``batch``; returns the loss averaged over processes.

        The first step of a compiled model compiles it; if that fails (an operation the
        compiler cannot handle, no C++ compiler), the warning says why and training goes on
        eagerly from the same step.
        """
        eager, self.eager_model = self.eager_model, None
        if eager is None:
            return self._step(iteration, batch)
        try:
            return self._step(iteration, batch)
        except (OutOfMemory, TrainingDiverged):
            raise
        except Exception as error:  # the compiler fails in many ways (its own, C++, Triton)
            log.warning(
                "torch.compile failed (%s: %s); training continues without compiling",
                type(error).__name__, first_line(error),
            )  # fmt: skip
            self.model, self.compiled = eager, False
            return self._step(iteration, batch)

    def _step(self, iteration: int, batch: dict[str, torch.Tensor]) -> float:
        """``run_step`` on ``self.model``: micro-batches, the loss check and the SGD step.

        The batch goes through the network ``micro_batch`` samples at a time, each pass's loss
        weighted by its share of the batch, so the summed gradients are the whole batch's: the
        loss is a mean over samples (Dice per sample; cross-entropy per voxel, and every patch
        has as many voxels). Raises ``OutOfMemory`` when a pass does not fit.
        """
        self._set_learning_rate(iteration)
        arguments = () if self.sample_ops is None else (tuple(self.sample_ops(self.sampler_rng)),)
        size = len(batch["image"])
        images = batch["image"].split(self.micro_batch or size)
        labels = batch["label"].split(self.micro_batch or size)
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        with _raising_out_of_memory(len(images[0]), iteration + 1):
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                # DDP averages the gradients over processes in the last backward only.
                with self._sync_gradients(last=index == len(images) - 1):
                    loss = self._loss(image, label, arguments) * (len(image) / size)
                    self._backward(loss)
                losses.append(loss.detach())
            # Every process must see the same verdict, or the others would wait forever.
            value = float(_all_reduce(torch.stack(losses).sum()).item()) / _rank()[1]
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {value} at iteration {iteration + 1}")
            self._optimizer_step()
        return value

    def _set_learning_rate(self, iteration: int) -> None:
        training = self.config.training
        rate = learning_rate(
            iteration,
            training.learning_rate,
            training.warmup_start_lr,
            training.warmup_iterations,
            training.milestones,
            training.gamma,
            decay=training.lr_decay,
            iterations=training.iterations,
            poly_exponent=training.poly_exponent,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def _loss(
        self, image: torch.Tensor, label: torch.Tensor, arguments: tuple[Any, ...]
    ) -> torch.Tensor:
        image = image.to(self.device, memory_format=memory_format(self.device))
        if self.compiled:
            compiling.step_begins()  # the last pass's CUDA-graph buffers may be reused
        with autocast(self.precision, self.device):
            logits = self.model(image, *arguments)
        label = label.to(self.device)
        if isinstance(logits, list):  # deep supervision: one output per scale
            return self.loss([_widened(output) for output in logits], label)
        return self.loss(_widened(logits), label)

    def _sync_gradients(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        model = getattr(self.model, "_orig_mod", self.model)  # under torch.compile's wrapper
        if last or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()


def _widened(logits: torch.Tensor) -> torch.Tensor:
    """float32 at least: autocast's bf16/fp16 logits are widened; a float64 model keeps float64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@contextlib.contextmanager
def _raising_out_of_memory(micro_batch: int, iteration: int) -> Iterator[None]:
    """Turn the allocators' out-of-memory errors into ``OutOfMemory``."""
    try:
        yield
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        raise OutOfMemory(micro_batch, iteration, error) from error


def _validation_model(network: nn.Module, architecture: Architecture | None, supernet: bool) -> Any:
    if supernet:
        assert architecture is not None, "a supernet is validated on the architecture's path"
        # A supernet is validated on the path of the architecture's own colouring.
        return lambda x: network(x, architecture.ops)
    return network


@dataclass
class _Clock:
    """Times a process's training for ``Timings``: the iterations after its first
    ``UNTIMED_ITERATIONS``, without the validations among them."""

    start: int
    since: float | None = None
    since_iteration: int = 0
    validating: float = 0.0
    """Seconds of the validations since ``since``."""
    validations: list[float] = field(default_factory=list)

    def iteration_done(self, done: int) -> None:
        if self.since is None and done - self.start >= UNTIMED_ITERATIONS:
            self.since, self.since_iteration = time.perf_counter(), done

    def validated(self, seconds: float) -> None:
        self.validations.append(seconds)
        if self.since is not None:
            self.validating += seconds

    def timings(self, done: int) -> Timings | None:
        """The timings so far (all processes reach the same verdict), or None before an
        iteration and a validation are timed."""
        if self.since is None or done <= self.since_iteration or not self.validations:
            return None
        timed = done - self.since_iteration
        step = (time.perf_counter() - self.since - self.validating) / timed
        validation = sum(self.validations) / len(self.validations)
        slowest = torch.tensor([step, validation], dtype=torch.float64)
        if _rank()[1] > 1:
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        return Timings(float(slowest[0]), float(slowest[1]), timed)


def fit(
    network: nn.Module,
    architecture: Architecture | None,
    batches: BatchSource,
    validation: ValidationSource,
    config: RunConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    sample_ops: OpsSampler | None = None,
    progress: Progress | None = None,
    on_validation: ValidationCallback | None = None,
    model_info: dict[str, Any] | None = None,
    device: torch.device | None = None,
    micro_batch: int | None = None,
    governor: ThreadGovernor | None = None,
    reschedule: Reschedule | None = None,
) -> TrainResult:
    """Train ``network`` (a ``C2FNet``, or a ``Supernet`` when ``sample_ops`` is given).

    Args:
        network: built from ``architecture``, on any device; moved to ``device``.
        architecture: stored with every model folder and checkpoint; None only for a network
            from outside the search space (e.g. a benchmark's baseline).
        batches: see ``BatchSource``; under DDP each process gets its own share of the batch.
        validation: see ``ValidationSource``; Dice is summed over processes.
        config: the resolved run configuration.
        out_dir: receives ``config.yaml``, ``checkpoints/``, ``best/``, ``last/``,
            ``progress.png`` and ``tb/``.
        resume: continue from ``out_dir/checkpoints`` (from scratch if there is none).
        sample_ops: draws a colouring per iteration for a supernet.
        progress: per-iteration callback on rank 0.
        on_validation: see ``ValidationCallback`` (e.g. a search's pruner).
        model_info: extra fields for ``model.json`` (e.g. the preprocessing plan's name).
        micro_batch: samples per pass through the network, accumulating the gradients of a
            batch over several passes (same step, less memory). None: the micro-batch recorded
            in the checkpoint when resuming, else the whole batch. Saved in every checkpoint.
        governor: ticked before every step, so that it fits the threads to the cores other
            jobs leave free; the entry point that owns the process starts it (or not).
        reschedule: see ``Reschedule`` (``c2fnas run`` re-fits a budget's schedule to the
            measured time); the new configuration is saved as ``out_dir/config.yaml``.

    Raises:
        TrainingDiverged: on a NaN or infinite loss.
        OutOfMemory: a training step ran out of memory (``with_smaller_micro_batches``).
        FileExistsError: ``out_dir`` already holds a checkpoint and ``resume`` is false.
    """
    training = config.training
    rank = _rank()[0]
    info = _model_info(network, config, sample_ops is not None, model_info)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trainer = _make_trainer(network, config, device, sample_ops)
    folder = TrainingFolder(out_dir)
    state = _restore(trainer, folder.checkpoints, resume)
    if micro_batch is not None and micro_batch < 1:
        raise ValueError(f"micro_batch {micro_batch}: must be at least 1")
    trainer.micro_batch = micro_batch if micro_batch is not None else state.get("micro_batch")
    if trainer.micro_batch is not None:
        log.info("%s: %d sample(s) per pass, gradients accumulated", out_dir, trainer.micro_batch)
    run_log = RunLog(
        out_dir, state.get("history"), enabled=rank == 0, tensorboard=training.tensorboard,
        class_names=_class_names(info),
    )  # fmt: skip
    if rank == 0:
        write_text_atomic(folder.config, config.to_yaml())
    started = time.perf_counter() - float(state.get("seconds", 0.0))
    start = int(state.get("iteration", 0))
    clock = _Clock(start)
    stream = batches(start)
    trainer.network.train()
    iteration = start
    while iteration < training.iterations:
        if governor is not None:
            governor.tick()
        loss = trainer.run_step(iteration, next(stream))
        iteration = done = iteration + 1
        clock.iteration_done(done)
        run_log.loss(done, loss, trainer.optimizer.param_groups[0]["lr"])
        if progress is not None and rank == 0:
            rate = trainer.optimizer.param_groups[0]["lr"]
            progress(done, training.iterations, {"loss": loss, "lr": rate, **run_log.last_dice()})
        last = done == training.iterations
        if validates_after(done, training.iterations, training.validate_every):
            validating = time.perf_counter()
            _validate(trainer, architecture, validation, run_log, done, info, out_dir, sample_ops)
            clock.validated(time.perf_counter() - validating)
            if on_validation is not None:
                on_validation(done, float(run_log.history["dice"][-1][2]))
        if done % training.checkpoint_every == 0 or last:
            if rank == 0:
                saved = {"seconds": time.perf_counter() - started, "history": run_log.history}
                _checkpoint(trainer, folder.checkpoints, done, architecture, info, saved)
            stream = batches(done)
            timings = clock.timings(done) if reschedule is not None and not last else None
            changed = reschedule(done, timings) if reschedule and timings else None
            if changed is not None:  # from the next iteration on, and never again
                reschedule, config, training = None, changed, changed.training
                trainer.config = changed
                if rank == 0:
                    write_text_atomic(folder.config, changed.to_yaml())
    run_log.close()
    best = run_log.best()
    return TrainResult(
        best_dice=best["dice"],
        best_mean=best["mean"],
        best_iteration=best["iteration"],
        iterations=training.iterations,
        seconds=time.perf_counter() - started,
        history=run_log.history,
    )


def _class_names(info: dict[str, Any]) -> list[str] | None:
    """The foreground classes' names from the dataset's labels in the model's plan, if any."""
    labels = info.get("plan", {}).get("labels")
    if not labels:
        return None
    return [str(labels[value]) for value in sorted(labels, key=int)[1:]]


def _model_info(
    network: nn.Module, config: RunConfig, supernet: bool, extra: dict[str, Any] | None
) -> dict[str, Any]:
    info = {
        "kind": "supernet" if supernet else "network",
        "in_channels": int(getattr(network, "in_channels", 0)),
        "num_classes": int(getattr(network, "num_classes", 0)),
        "patch": list(config.data.patch),
        "stride": config.training.stride,
        **(extra or {}),
    }
    if info["num_classes"] < 2:
        raise ValueError("fit needs num_classes >= 2: from the network or in model_info")
    return info


def _make_trainer(
    network: nn.Module, config: RunConfig, device: torch.device, sample_ops: OpsSampler | None
) -> _Trainer:
    training = config.training
    precision = resolve_precision(training.precision, device)
    network = network.to(device, memory_format=memory_format(device))
    trained: nn.Module = network
    loss: nn.Module = DiceCELoss(to_onehot_y=True, softmax=True)
    if training.deep_supervision:
        supervised = DeepSupervision(network).to(device, memory_format=memory_format(device))
        trained, loss = supervised, DeepSupervisionLoss(loss, supervised.weights())
    optimizer = torch.optim.SGD(
        trained.parameters(),
        lr=training.learning_rate,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
    )
    model: nn.Module = trained
    if _rank()[1] > 1:
        model = DistributedDataParallel(
            trained,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=sample_ops is not None,  # a supernet trains one path per step
        )
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    trainer = _Trainer(
        network, model, optimizer, loss, config, precision, device, scaler, sample_ops,
        random.Random(training.seed),
        heads=trained.heads if isinstance(trained, DeepSupervision) else None,
    )  # fmt: skip
    supernet = sample_ops is not None
    if compiling.wanted(training.compile, device, supernet, training.iterations):
        log.info("compiling the training step on %s; the first step takes longer", device)
        trainer.eager_model, trainer.compiled = model, True
        trainer.model = compiling.compiled(model, device)
    return trainer


def _restore(trainer: _Trainer, checkpoints: Path, resume: bool) -> dict[str, Any]:
    """Load the latest checkpoint into ``trainer`` when resuming; its ``state.json`` or {}."""
    existing = ckpt.latest_checkpoint(checkpoints)
    if existing is not None and not resume:
        raise FileExistsError(
            f"{checkpoints.parent} already holds a run; resume it or choose another folder"
        )
    checkpoints.parent.mkdir(parents=True, exist_ok=True)
    if existing is None:
        return {}
    state = ckpt.read_checkpoint(existing, trainer.network, trainer.optimizer, trainer.heads)
    trainer.sampler_rng.setstate(ckpt.python_state_from_json(state["sampler_rng"]))
    if trainer.scaler is not None and "scaler" in state:
        trainer.scaler.load_state_dict(state["scaler"])
    log.info("resuming %s from iteration %d", checkpoints.parent, state["iteration"])
    return state


def _checkpoint(
    trainer: _Trainer,
    checkpoints: Path,
    iteration: int,
    architecture: Architecture | None,
    info: dict[str, Any],
    state: dict[str, Any],
) -> None:
    state = {
        **state,
        "sampler_rng": ckpt.python_state_to_json(trainer.sampler_rng.getstate()),
        "micro_batch": trainer.micro_batch,
        **({"scaler": trainer.scaler.state_dict()} if trainer.scaler is not None else {}),
    }
    ckpt.write_checkpoint(
        checkpoints, iteration, trainer.network, architecture, info, trainer.optimizer, state,
        heads=trainer.heads,
    )  # fmt: skip


def _validate(
    trainer: _Trainer,
    architecture: Architecture | None,
    validation: ValidationSource,
    run_log: RunLog,
    iteration: int,
    info: dict[str, Any],
    out_dir: Path,
    sample_ops: OpsSampler | None,
) -> None:
    network, config = trainer.network, trainer.config
    network.eval()
    total, count = validate(
        _validation_model(network, architecture, sample_ops is not None),
        validation(),
        int(info["num_classes"]),
        config.data.patch,
        config.training.stride,
        trainer.precision,
        trainer.device,
        config.training.window_batch,
    )
    network.train()
    summed = _all_reduce(torch.cat([total, torch.tensor([float(count)], dtype=torch.float64)]))
    cases = int(summed[-1].item())
    dice = (summed[:-1] / max(cases, 1)).tolist()
    improved = run_log.dice(iteration, dice, cases)
    if _rank()[0] != 0:
        return
    model_info = {**info, "iteration": iteration, "dice": dice, "validation_cases": cases}
    folder = TrainingFolder(out_dir)
    write_model(folder.last, network, architecture, model_info)
    if improved:
        write_model(folder.best, network, architecture, model_info)
    run_log.plot()
