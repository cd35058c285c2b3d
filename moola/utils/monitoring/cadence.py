"""When the monitor measures: every N optimizer steps or on the spec's epochs, and the count of optimizer steps
that schedules it (see :class:`~moola.utils.monitoring.monitor.GradientMonitor`'s ``every_n_steps``). Only the
schedule: no measuring, no records."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

#: Calls of the step hook in a row without the watched optimizer stepping, after which it is taken to no longer
#: train the model (a new one that was never watched): far more than a GradScaler's skipped steps at the start,
#: or a loop that calls the hook per micro-batch (warned at the second call) under any usual accumulation.
STALLED_CALLS = 32


def steps_taken(optimizer: torch.optim.Optimizer) -> int:
    """The steps ``optimizer`` has taken, as its state counts them (0 for one that keeps no count, or none
    yet): the most any parameter's ``step`` says. One read at set-up, not per step."""
    counts = [state["step"] for state in optimizer.state.values() if "step" in state]
    return max((int(count) for count in counts), default=0)


def whole(count: Any) -> Any:
    """An epoch or step as a Python int when it is any integer (numpy, a 0-d integer tensor), so the record
    keeps it; anything else as given, for the record's check to name."""
    try:
        return operator.index(count)
    except TypeError:
        return count


class Cadence:
    """Whether gradient statistics and task balance are due at the current step and epoch, and which optimizer
    step that is (counted by :meth:`watch_optimizer`'s hook, or said by :meth:`at_step`). Epochs and steps are
    as the loop gives them; frequencies are at least 1 (the monitor checks)."""

    def __init__(
        self,
        log_frequency: int,
        task_balance_frequency: int,
        every_n_steps: int | None,
        balance_every_n_steps: int | None,
    ) -> None:
        self.log_frequency = log_frequency
        self.task_balance_frequency = task_balance_frequency
        self.every_n_steps = every_n_steps
        self.balance_every_n_steps = balance_every_n_steps or every_n_steps
        self.epoch: int | None = None
        self.steps_done = 0  # optimizer steps taken so far
        self.step_given = False  # at_step said which step it is: a restored optimizer's count does not override it
        self._counted: torch.optim.Optimizer | None = None  # the optimizer whose steps are counted
        self._hook: RemovableHandle | None = None
        self._counted_stepped = False  # it stepped since it was watched
        self._calls_since_step = 0  # step-hook calls since it last stepped
        self.last_stats_at: tuple[int | None, int] | None = None  # (epoch, step) of the last measurement
        self.remeasure: tuple[int | None, int] | None = None  # (epoch, step) measured non-finite: its retry is due
        self.last_balance_at: tuple[int | None, int] | None = None
        # (step, epoch) at the first step hook: where this process began monitoring (a resumed run's is late).
        self.began: tuple[int, int | None] | None = None

    @property
    def step(self) -> int:
        """The optimizer step now being prepared (1-based): the one the current gradients are applied in."""
        return self.steps_done + 1

    def _due(self, every_steps: int | None, every_epochs: int, last: tuple[int | None, int] | None) -> bool:
        if every_steps is not None:
            # The first step at or past each multiple of N not measured yet, rather than the multiples alone: a
            # step count that moves by more than one (two optimizers stepping Lightning's global_step each batch,
            # a loop numbering micro-batches) would never land on one.
            done = last[1] if last is not None else (self.began[0] if self.began else self.step) - 1
            return self.step // every_steps > done // every_steps
        if self.epoch is None:
            return False
        return self.epoch % every_epochs == 0 and (last is None or last[0] != self.epoch)

    def stats_due(self) -> bool:
        """True if gradient statistics are due now."""
        return self._due(self.every_n_steps, self.log_frequency, self.last_stats_at)

    def balance_due(self) -> bool:
        """True if a task-balance probe is due now."""
        return self._due(self.balance_every_n_steps, self.task_balance_frequency, self.last_balance_at)

    @property
    def counting_optimizer(self) -> bool:
        """Whether an optimizer's own steps count the steps (else the step hook's calls do)."""
        return self._counted is not None

    def watch_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Count ``optimizer``'s steps (a hook after each ``step()``): with gradient accumulation that is one per
        accumulated batch, and a step a GradScaler skips is not one. Several optimizers stepping together
        (sparse and dense parameters) make one training step: of those watched before the first of them stepped,
        the first counts. One watched after the counted one stepped replaces it (rebuilt after unfreezing layers,
        a new fold's model under the same monitor): the count goes on from the step reached. accelerate's
        ``AcceleratedOptimizer`` is counted by the optimizer it wraps, which steps only on the accumulated batch.
        An optimizer restored from a checkpoint that counts its steps (Adam, AdamW, and most but plain SGD)
        starts the count where it left off, unless :meth:`at_step` said otherwise: a resumed run's records go on
        from the steps it resumed at."""
        inner = getattr(optimizer, "optimizer", None)
        counted_optimizer = inner if isinstance(inner, torch.optim.Optimizer) else optimizer
        if counted_optimizer is self._counted or (self._counted is not None and not self._counted_stepped):
            return
        if self._counted is None and not self.step_given:
            self.steps_done = steps_taken(counted_optimizer)
        self._release()

        def counted(_optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
            self.steps_done += 1
            self._counted_stepped = True
            self._calls_since_step = 0

        self._hook = counted_optimizer.register_step_post_hook(counted)
        self._counted, self._counted_stepped = counted_optimizer, False

    def _release(self) -> None:
        """Stop counting the watched optimizer's steps (none: nothing to do)."""
        if self._hook is not None:
            self._hook.remove()
        self._counted, self._hook, self._calls_since_step = None, None, 0

    def after_call(self, step_given: bool) -> bool:
        """At the end of each step-hook call: count the step where no optimizer counts them; True when the
        watched optimizer has not stepped in :data:`STALLED_CALLS` calls in a row, from which the calls count the
        steps, those stalled calls included (a framework's own ``step_given`` count is never stalled)."""
        if self._counted is None:
            self.steps_done += 1
            return False
        self._calls_since_step = 0 if step_given else self._calls_since_step + 1
        if self._calls_since_step < STALLED_CALLS:
            return False
        self.steps_done += self._calls_since_step
        self._release()
        return True

    def at_step(self, step: int) -> None:
        """Take ``step`` (1-based) as the optimizer step now being prepared (a framework's own count)."""
        self.steps_done = whole(step) - 1
        self.step_given = True

    def note_began(self) -> None:
        """Remember the first step hook's (step, epoch): where this process began monitoring."""
        if self.began is None:
            self.began = (self.step, self.epoch)

    def first_known(self) -> tuple[int, int | None] | None:
        """(step, epoch) where this process began, for ``run_start``: known once a step hook ran, or a framework
        or restored optimizer said which step this is; otherwise None (a watcher then judges by when the first
        records came)."""
        return self.began or ((self.step, self.epoch) if self.step_given or self.steps_done else None)
