"""Training floors read off single-task runs (``moola-watch floors``): each task's training loss at the end of a
run on it alone, ready to give as ``--task-floor TASK=LOSS``. Pure: records in, floors out."""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moola_watch import schema

#: A floor is the mean of this many last epochs' training loss (one epoch's value is noisy), as the labelled
#: corpus measured it (``benchmarks/detection_labels.TAIL_EPOCHS``).
TAIL_EPOCHS = 3


@dataclass
class SoloRun:
    """What one run's records say of its tasks: each task's epoch training losses in order, and the loss weights
    of its latest balance sample (empty when it recorded none)."""

    run: str
    losses: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def trained(self) -> list[str]:
        """The tasks this run trained: those with a loss whose recorded weight is not 0 (every task with a loss
        where no weight was recorded)."""
        return [task for task in self.losses if self.weights.get(task, 1) != 0]


@dataclass(frozen=True)
class Floor:
    """One task's training floor (loss, the mean of its last ``epochs`` epochs' training loss) from ``run``."""

    task: str
    loss: float
    run: str
    epochs: int


def solo_runs(records: Iterable[Mapping[str, Any]]) -> list[SoloRun]:
    """Each run of ``records`` (a log's, in order) with its tasks' epoch losses (``task_losses``) and weights."""
    runs: dict[str, SoloRun] = {}
    for record in records:
        run = runs.setdefault(record["run"], SoloRun(record["run"]))
        if record["kind"] == schema.EPOCH:
            for task, loss in (record.get("task_losses") or {}).items():
                if isinstance(loss, int | float) and not isinstance(loss, bool) and math.isfinite(loss):
                    run.losses.setdefault(task, []).append(float(loss))
        elif record["kind"] == schema.TASK_BALANCE and isinstance(record.get("weights"), Mapping):
            run.weights = dict(record["weights"])
    return list(runs.values())


def floor_of(run: SoloRun, tail: int = TAIL_EPOCHS) -> Floor | None:
    """The training floor of the one task ``run`` trained (:meth:`SoloRun.trained`); None unless it trained
    exactly one (a run of several tasks together says nothing of what one reaches alone)."""
    trained = run.trained()
    if len(trained) != 1:
        return None
    last = run.losses[trained[0]][-tail:]
    return Floor(trained[0], math.fsum(last) / len(last), run.run, len(last))


def flags(floors: Iterable[Floor]) -> str:
    """``--task-floor`` flags for ``floors``, a task's last one winning: '--task-floor a=0.312 --task-floor b=0.1'."""
    latest = {floor.task: floor.loss for floor in floors}
    return " ".join(f"--task-floor {shlex.quote(f'{task}={loss:.4g}')}" for task, loss in latest.items())
