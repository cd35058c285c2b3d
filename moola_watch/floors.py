"""Training floors: each task's training loss at the end of a run on it alone. Checking those a user gives
(``task_floors``, ``--task-floor``, ``[task_floors]``) and those a ``run_start`` recorded, and reading them off
single-task runs (``moola-watch floors``), ready to give as ``--task-floor TASK=LOSS``. Pure: no I/O."""

from __future__ import annotations

import math
import numbers
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moola_watch import schema

#: A floor is the mean of this many last epochs' training loss (one epoch's value is noisy), as the labelled
#: corpus measured it (``benchmarks/detection_labels.TAIL_EPOCHS``).
TAIL_EPOCHS = 3


def checked_floors(given: Any) -> dict[str, float]:
    """Training floors given by a user (task -> loss, any real number type: numpy's too) as floats;
    ``ValueError`` for anything but a mapping of task names, or naming the first floor that is not a finite loss
    of at least 0."""
    if not isinstance(given, Mapping):
        raise ValueError(f"training floors must map each task's name to its loss, got {given!r}")
    floors: dict[str, float] = {}
    for task, loss in given.items():
        value = math.nan
        if isinstance(loss, numbers.Real) and not isinstance(loss, bool):
            try:
                value = float(loss)
            except OverflowError:  # an int beyond any float
                value = math.inf
        if not isinstance(task, str):
            raise ValueError(f"a task's name must be text, got {task!r}")
        if not 0 <= value < math.inf:
            raise ValueError(f"the {task} task's training floor must be a finite loss of at least 0, got "
                             f"{repr(loss)[:40]}")  # fmt: skip
        floors[task] = value + 0.0  # -0.0 is 0
    return floors


def task_floors(recorded: Any) -> dict[str, float]:
    """The usable entries of a ``run_start``'s ``task_floors`` (task -> a finite loss of at least 0); others, and
    anything that is not an object, are left out: a floor the rules cannot read judges nothing."""
    if not isinstance(recorded, Mapping):
        return {}
    usable: dict[str, float] = {}
    for task, loss in recorded.items():
        try:
            usable |= checked_floors({task: loss})
        except ValueError:
            continue
    return usable


@dataclass
class SoloRun:
    """What one run's records say of its tasks: each epoch's training losses (task -> a finite loss, or None
    where it was not finite), the loss weights of each balance sample, its ``run_start`` config and how it ended
    (None: no ``run_end``)."""

    run: str
    epochs: list[dict[str, float | None]] = field(default_factory=list)
    weights: list[dict[str, Any]] = field(default_factory=list)
    config: Mapping[str, Any] = field(default_factory=dict)
    status: str | None = None

    def tasks(self) -> list[str]:
        """Every task with a loss in some epoch, in order of first appearance."""
        return list(dict.fromkeys(task for epoch in self.epochs for task in epoch))

    def trained(self) -> list[str] | str:
        """The tasks this run trained, or why that cannot be told. Trained: a task with a loss whose weight is
        not 0 in every balance sample; without balance samples, by the project trainer's ``alpha`` (type) and
        ``beta`` (pointer) in its config; with neither, every task with a loss (a loop that computes one loss)."""
        tasks = self.tasks()
        if self.weights:
            kinds = {tuple(task for task in tasks if weights.get(task, 1) != 0) for weights in self.weights}
            if len(kinds) > 1:
                return "its loss weights changed during the run (a warm-up?): not one task alone throughout"
            return list(kinds.pop())
        if {"alpha", "beta"} <= set(self.config) and set(tasks) <= {"type", "pointer"}:
            weights = {"type": self.config["alpha"], "pointer": self.config["beta"]}
            return [task for task in tasks if weights[task] != 0]
        return tasks


@dataclass(frozen=True)
class Floor:
    """One task's training floor (loss, the mean of its last ``epochs`` epochs' training loss) from ``run``;
    ``status`` is how the run ended (None: it has no ``run_end``); ``first`` is the task's loss in the run's first
    epoch (None: not finite there), which tells a floor the task learned its way down to from one it barely left."""

    task: str
    loss: float
    run: str
    epochs: int
    status: str | None = "completed"
    first: float | None = None


@dataclass(frozen=True)
class Skipped:
    """A run that gives no floor, and why."""

    run: str
    why: str


def solo_runs(records: Iterable[Mapping[str, Any]]) -> list[SoloRun]:
    """Each run of ``records`` (a log's, in order) with what :class:`SoloRun` keeps."""
    runs: dict[str, SoloRun] = {}
    for record in records:
        run = runs.setdefault(record["run"], SoloRun(record["run"]))
        kind = record["kind"]
        if kind == schema.EPOCH:
            losses = record.get("task_losses") or {}
            run.epochs.append({task: _finite(loss) for task, loss in losses.items()})
        elif kind == schema.TASK_BALANCE and isinstance(record.get("weights"), Mapping):
            run.weights.append(dict(record["weights"]))
        elif kind == schema.RUN_START:
            run.config = record.get("config") if isinstance(record.get("config"), Mapping) else {}
        elif kind == schema.RUN_END:
            run.status = record.get("status")
    return list(runs.values())


def _finite(loss: Any) -> float | None:
    is_number = isinstance(loss, int | float) and not isinstance(loss, bool)
    return float(loss) if is_number and math.isfinite(loss) else None


def floor_of(run: SoloRun, tail: int = TAIL_EPOCHS) -> Floor | Skipped:
    """The training floor of the one task ``run`` trained (:meth:`SoloRun.trained`): the mean of its losses in
    the run's last ``tail`` epochs; or why there is none: several tasks trained together (a run of tasks
    together says nothing of what one reaches alone), no epoch loss, a last epoch without a finite loss (a run
    that diverged is not at a floor), or a negative mean (a floor is a loss of at least 0)."""
    trained = run.trained()
    if isinstance(trained, str):
        return Skipped(run.run, trained)
    if len(trained) > 1:
        return Skipped(run.run, f"it trained {', '.join(trained)} together, not one task alone")
    if not trained:
        return Skipped(run.run, "it recorded no training loss per epoch (the epoch records' task_losses) of a "
                                "task it trained")  # fmt: skip
    task = trained[0]
    last = [epoch.get(task) for epoch in run.epochs[-tail:]]
    if any(loss is None for loss in last):
        return Skipped(run.run, f"its {task} loss is not finite, or not recorded, in some of its last "
                                f"{len(last)} epochs")  # fmt: skip
    floor = math.fsum(loss for loss in last if loss is not None) / len(last)
    if floor < 0:
        return Skipped(run.run, f"its {task} loss ends negative ({floor:.4g}): a floor is a loss of at least 0")
    return Floor(task, floor, run.run, len(last), run.status, run.epochs[0].get(task))


def flags(floors: Iterable[Floor]) -> str:
    """``--task-floor`` flags for ``floors``, a task's last one winning, each as one word a shell and argparse
    take whatever the task's name: '--task-floor=a=0.312 --task-floor='my task=0.1''."""
    latest = {floor.task: floor.loss for floor in floors}
    return " ".join(shlex.quote(f"--task-floor={task}={loss:.4g}") for task, loss in latest.items())


def fall_words(floor: Floor) -> str:
    """How far the solo run took its task below its first epoch's loss: ', 94% of its first epoch's 1.47'. A
    floor near its first loss counts a task that never left its start as at its floor: a task of noisy labels
    can sit there, one that barely learned alone would be excused from starving ('' where the first is unknown)."""
    if floor.first is None or floor.first <= 0:
        return ""
    return f", {floor.loss / floor.first:.0%} of its first epoch's {floor.first:.4g}"
