"""Each task's mean training loss over an epoch, from the task losses the monitor is given batch by batch: what
an ``epoch`` record's ``task_losses`` holds where the loop gives none (a framework callback, ``monitor.backward``),
so that a run's first epoch and a run on one task alone (``moola-watch floors``) can be read off its log."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


class EpochTaskLosses:
    """The sum and count of each task's losses in the current epoch, summed where they lie (no host sync per
    batch); :meth:`means` reads them once at the epoch's end and starts the next epoch."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, losses: Mapping[str, object]) -> None:
        """One batch's task losses (task -> a one-element tensor; anything else is not a loss to average)."""
        for task, loss in losses.items():
            if isinstance(loss, torch.Tensor) and loss.numel() == 1:
                value = loss.detach().float().reshape(())
                # (a copy to start from: the loss's own storage, which the loop may reuse, is never the sum)
                self._sums[task] = (
                    self._sums[task] + value.to(self._sums[task].device) if task in self._sums else value.clone()
                )
                self._counts[task] = self._counts.get(task, 0) + 1

    def means(self) -> dict[str, float]:
        """Each task's mean loss over the epoch's batches, a task whose mean is not finite left out (a batch's
        NaN is no epoch loss to compare); then empty for the next epoch. One host sync per task."""
        means = {task: float(total) / self._counts[task] for task, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        return {task: mean for task, mean in means.items() if math.isfinite(mean)}
