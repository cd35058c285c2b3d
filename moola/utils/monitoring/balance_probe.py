"""Task balance as the monitor probes it during a run: what each call's task losses tell (the task names for
``run_end``, calls that name one task each, the first training step's losses), the probe itself, and what a
balance says on the console and in its ``task_balance`` record. The measuring is
:mod:`~moola.utils.monitoring.task_balance`'s; when to probe is the cadence's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from moola.utils.monitoring.cadence import Cadence
from moola.utils.monitoring.console import PREFIX
from moola.utils.monitoring.distributed import static_graph_first_iteration
from moola.utils.monitoring.run_output import RunOutput
from moola.utils.monitoring.task_balance import BalanceUnavailable, Directions, TaskGradients, compute_task_balance
from moola_watch import rules, schema
from moola_watch.rules import Thresholds

#: Why a probe waits for DDP(static_graph=True)'s second iteration (see ``static_graph_first_iteration``).
STATIC_GRAPH_FIRST_ITERATION = (
    "not measured on DistributedDataParallel(static_graph=True)'s first iteration, whose delayed all-reduce "
    "must come from the step's own backward; the next probe measures"
)


def _one_number(value: object) -> bool:
    """Whether ``value`` is a plain number or a tensor holding one."""
    return isinstance(value, float | int) or (isinstance(value, torch.Tensor) and value.numel() == 1)


class BalanceProbe:
    """The task balance of one monitored run, at the ``cadence``'s step and epoch; warnings and console lines go
    to ``output``."""

    def __init__(self, cadence: Cadence, output: RunOutput) -> None:
        self._cadence = cadence
        self._output = output
        self.tasks: dict[str, None] = {}  # the task names losses were given under, in order (run_end's tasks)
        self._single_task: str | None = None  # the task of the first call to name only one
        # The task losses of the first training step the hooks saw, and its step: the first balance record carries
        # them (the run's L(0), GradNorm's start) when that record comes later (every_n_steps=50: after 49 updates,
        # when an easy task has learned already and would look as if it never started).
        self._start_losses: tuple[dict[str, torch.Tensor | float], int] | None = None
        self._start_recorded = False
        # The parameters the last balance was measured on: a task cut off them later is left out, not the end of it
        self._shared_before: tuple[torch.Tensor, ...] = ()
        self._directions: Directions = {}  # each task's gradient there: the next balance's persistence

    def takes(self, losses: Mapping[str, torch.Tensor]) -> bool:
        """Note a call's named task ``losses`` (their names, and the first training step's values); True if a
        balance can be measured from them: two tasks or more, in a training step."""
        self._saw_tasks(losses)
        # (A loss that is not a tensor counts as requiring grad here: the probe then says what is wrong with it.)
        if len(losses) == 1:
            self._one_task_per_call(next(iter(losses)))
        if len(losses) < 2 or not any(getattr(loss, "requires_grad", True) for loss in losses.values()):
            return False  # one task has nothing to be balanced against; an evaluation (no_grad) is no step
        if self._start_losses is None:  # detached: no host sync until it is recorded
            start = {name: loss.detach() if isinstance(loss, torch.Tensor) else loss for name, loss in losses.items()}
            self._start_losses = (start, self._cadence.step)
        return True

    def measure(
        self,
        model: nn.Module,
        losses: Mapping[str, torch.Tensor],
        weights: Mapping[str, float | torch.Tensor] | None,
        *,
        shared_parameters: Sequence[nn.Parameter] | None,
        representation: torch.Tensor | None,
    ) -> TaskGradients:
        """The balance of ``losses`` now (see :func:`~moola.utils.monitoring.task_balance.compute_task_balance`),
        on the parameters the last balance was measured on where the tasks no longer all share some. Raises
        :class:`BalanceUnavailable` on DDP(static_graph=True)'s first iteration."""
        if static_graph_first_iteration(losses.values()):
            raise BalanceUnavailable(STATIC_GRAPH_FIRST_ITERATION)
        balance = compute_task_balance(
            losses, model, weights=weights, shared_parameters=shared_parameters, representation=representation,
            before=self._shared_before, previous=self._directions,
        )  # fmt: skip
        self._shared_before = balance.parameters or self._shared_before
        # A task with no gradient in this batch (unlabelled here) keeps its last direction to be compared with
        measured = {task: d for task, d in balance.directions.items() if balance.raw_norms.get(task, 0.0) > 0}
        self._directions = {**self._directions, **measured} if balance.directions else {}
        return balance

    def record(self, balance: TaskGradients, thresholds: Thresholds) -> dict[str, Any]:
        """Say ``balance`` on the console (and warn once of tasks left out of it) and give the fields of its
        ``task_balance`` record, at the current step and epoch (a balance measured there, wherever it was)."""
        cadence = self._cadence
        epoch, step = cadence.epoch, cadence.step
        cadence.last_balance_at = (epoch, step)
        self._saw_tasks(balance.norms)
        if balance.left_out:
            many = len(balance.left_out) > 1
            self._output.warn_once(
                f"left out {balance.left_out}",
                f"WARNING: task balance: the {' and '.join(balance.left_out)} task{'s get' if many else ' gets'} no "
                "gradient on the parameters the other tasks share (a head fed a detached input?): left out of the "
                f"balance, measured for {', '.join(balance.norms)}",
            )
        if balance.ratio is not None:
            if not math.isnan(balance.ratio):
                self._output.echo(f"\n{PREFIX} {rules.balance_message(balance.ratio, epoch, thresholds)}")
        else:
            parts = ", ".join(f"{t} {balance.norms[t]:.4g} ({balance.shares[t]:.0%})" for t in balance.norms)
            where = f"epoch {epoch}" if epoch is not None else f"step {step}"
            self._output.echo(f"\n{PREFIX} Task balance at {where}: {parts} (gradient norm, share of the update)")
        fields: dict[str, Any] = {"epoch": epoch, "step": step}
        if balance.ratio is not None:
            fields["ratio"] = balance.ratio
        if balance.left_out:  # a task measured before and left out now stopped training the shared layers
            fields["left_out"] = list(balance.left_out)
        if balance.persistence:
            fields["persistence"] = balance.persistence
        fields.update(self._take_start_losses())
        return {
            **fields,
            "norms": balance.norms,
            "raw_norms": balance.raw_norms,
            "cosine": balance.cosine,
            "cosines": balance.cosines,
            "shares": balance.shares,
            "losses": balance.losses,
            "weights": balance.weights,
            "scope": balance.scope,
        }

    def _take_start_losses(self) -> dict[str, Any]:
        """The first balance record's ``start_losses`` and ``start_step`` (see ``_start_losses``), when the losses
        were taken at an earlier step than this record's; {} after the first."""
        if self._start_recorded:
            return {}
        self._start_recorded = True
        start = self._start_losses
        if start is None or start[1] >= self._cadence.step:
            return {}
        # (a loss of more than one number, which that step's probe refused, is left out rather than raise here)
        losses = {name: float(loss) for name, loss in start[0].items() if _one_number(loss)}
        return {"start_losses": losses, "start_step": start[1]}

    def _one_task_per_call(self, task: str) -> None:
        """Calls naming one task each, a different one now and then (batches of one task in turn, from several
        datasets): the balance compares tasks' losses on one batch, so it would never be measured. Say so once."""
        first = self._single_task
        if first is None:
            self._single_task = task
        elif task != first:
            self._output.warn_once(
                "one task per call",
                f"WARNING: task balance: calls name one task each ({first}, then {task}): the balance compares the "
                "losses of two or more tasks on the same batch, so it is not measured; pass every task's loss of "
                "a batch together",
            )

    def _saw_tasks(self, names: Iterable[str]) -> None:
        """Remember task names for ``run_end`` (at most ``schema.MAX_TASK_NAMES``): a log whose run trained several
        tasks but never measured the balance of one of them then says so, where stderr's warning is long gone."""
        if len(self.tasks) < schema.MAX_TASK_NAMES:
            for name in names:
                self.tasks.setdefault(name)
            while len(self.tasks) > schema.MAX_TASK_NAMES:
                self.tasks.popitem()
