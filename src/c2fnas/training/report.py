"""What a run records: loss and Dice history, TensorBoard scalars and ``progress.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from c2fnas.files.atomic import replacing  # noqa: E402
from c2fnas.files.run_folder import TrainingFolder  # noqa: E402

LOSS_WINDOW = 50
"""Iterations averaged per point of the plotted loss curve."""


class RunLog:
    """History of one training run; only rank 0 writes files (``enabled``).

    ``history`` is JSON: ``{"loss": [[iteration, loss, lr], ...],
    "dice": [[iteration, [dice per class], mean, cases], ...]}``; it travels in checkpoints.
    ``class_names`` label the foreground classes in ``progress.png`` (default ``class 1``, ...).
    """

    def __init__(
        self,
        out_dir: Path,
        history: dict[str, Any] | None,
        enabled: bool,
        tensorboard: bool,
        class_names: list[str] | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.class_names = class_names
        self.history: dict[str, Any] = history or {"loss": [], "dice": []}
        self.enabled = enabled
        self._writer: Any = None
        if enabled and tensorboard:
            # only when asked for: importing TensorBoard takes seconds
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(TrainingFolder(out_dir).tensorboard))

    def loss(self, iteration: int, value: float, rate: float) -> None:
        self.history["loss"].append([iteration, value, rate])
        if self._writer is not None:
            self._writer.add_scalar("train/loss", value, iteration)
            self._writer.add_scalar("train/lr", rate, iteration)

    def dice(self, iteration: int, dice: list[float], cases: int) -> bool:
        """Record a validation; True when it is the best so far (first one included)."""
        mean = sum(dice) / len(dice) if cases and dice else math.nan
        previous = self.best() if self.history["dice"] else None
        self.history["dice"].append([iteration, dice, mean, cases])
        if self._writer is not None and cases:
            for index, value in enumerate(dice, start=1):
                self._writer.add_scalar(f"val/dice_class_{index}", value, iteration)
            self._writer.add_scalar("val/dice_mean", mean, iteration)
        if previous is None or math.isnan(previous["mean"]):
            return True
        return not math.isnan(mean) and mean > previous["mean"]

    def best(self) -> dict[str, Any]:
        """The best validation so far (the latest one when none has a number)."""
        if not self.history["dice"]:
            return {"iteration": 0, "dice": [], "mean": math.nan}
        scored = [entry for entry in self.history["dice"] if not math.isnan(entry[2])]
        iteration, dice, mean, _ = (
            max(scored, key=lambda entry: (entry[2], -entry[0]))
            if scored
            else self.history["dice"][-1]
        )
        return {"iteration": iteration, "dice": dice, "mean": mean}

    def last_dice(self) -> dict[str, float]:
        if not self.history["dice"]:
            return {}
        return {"dice": float(self.history["dice"][-1][2])}

    def plot(self) -> None:
        """Write ``progress.png`` (``figure``)."""
        if not self.enabled:
            return
        figure = self.figure()
        with replacing(TrainingFolder(self.out_dir).progress_plot) as temporary:
            figure.savefig(temporary, dpi=80)

    def figure(self) -> Figure:
        """Smoothed training loss, and validation Dice per class by name at every validation."""
        figure = Figure(figsize=(10, 4))
        loss_axis, dice_axis = figure.subplots(1, 2)
        losses = self.history["loss"]
        window = max(1, min(LOSS_WINDOW, len(losses) // 20 or 1))
        points = [
            (losses[end - 1][0], sum(item[1] for item in losses[end - window : end]) / window)
            for end in range(window, len(losses) + 1, window)
        ]
        if points:
            loss_axis.plot(*zip(*points, strict=True))
        loss_axis.set(xlabel="iteration", ylabel="Dice + CE loss", title="training loss")
        dice = [entry for entry in self.history["dice"] if entry[3]]
        if dice:
            iterations = [entry[0] for entry in dice]
            classes = len(dice[0][1])
            names = self.class_names or [f"class {index + 1}" for index in range(classes)]
            for index, name in zip(range(classes), names, strict=False):
                # a marker on every validation: one validation alone is a point, not a line
                dice_axis.plot(
                    iterations, [entry[1][index] for entry in dice], marker="o", label=name
                )
            means = [entry[2] for entry in dice]
            dice_axis.plot(iterations, means, "k--", marker="o", label="mean")
            dice_axis.legend()
        dice_axis.set(xlabel="iteration", ylabel="Dice", ylim=(0, 1), title="validation Dice")
        figure.tight_layout()
        return figure

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
