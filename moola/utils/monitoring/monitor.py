""":class:`GradientMonitor`: the hooks a training loop calls, composing when to measure
(:mod:`~moola.utils.monitoring.cadence`), what is measured (:mod:`~moola.utils.monitoring.stats_probe`,
:mod:`~moola.utils.monitoring.balance_probe`) and the records and alerts that come of it
(:mod:`~moola.utils.monitoring.run_output`).

The monitor's hooks are named for the moments of a training step, so a plain loop, the spec's ``fit`` and the
framework callbacks all drive it the same way::

    monitor.on_run_start(model)                           # once, before training
    monitor.on_epoch_start(epoch)                         # the epoch the next records belong to
    monitor.on_before_backward(model, losses, weights)    # task balance, if due (or monitor.backward(...))
    loss.backward()
    monitor.on_before_optimizer_step(model)               # gradient statistics, if due
    optimizer.step()
    monitor.on_epoch_end(epoch, train_loss=...)           # losses and metrics of an epoch
    monitor.on_run_end("completed")                       # or leave a ``with monitor:`` block

Measuring never changes the gradient a step applies, and a measurement that fails is one warning, never
a crashed run. The rules that judge the numbers live in :mod:`moola_watch.rules`.
"""

from __future__ import annotations

import math
import os
import socket
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Generic, TypeVar

import torch
from torch import nn

from moola import __version__
from moola.utils.monitoring.balance_probe import BalanceProbe
from moola.utils.monitoring.cadence import STALLED_CALLS, Cadence, whole
from moola.utils.monitoring.console import PREFIX
from moola.utils.monitoring.epoch_losses import EpochTaskLosses
from moola.utils.monitoring.halting import Halting
from moola.utils.monitoring.records import MAX_LAYER_NORMS, config_value, learning_rate, model_fields, plain
from moola.utils.monitoring.run_end import at_exit, ending, on_sigterm
from moola.utils.monitoring.run_output import RunOutput
from moola.utils.monitoring.stats_probe import StatsProbe
from moola.utils.monitoring.task_balance import BalanceUnavailable, TaskGradients, require_named
from moola_watch import rules, schema
from moola_watch.floors import checked_floors
from moola_watch.rules import Alert, MonitoringSummary, Thresholds
from moola_watch.writer_process import this_process

_T = TypeVar("_T")


class _Delegated(Generic[_T]):
    """A public attribute of the monitor that one of its parts (the attribute named ``part``) keeps: read and
    set there, so the monitor and the part never hold two copies that could differ."""

    def __init__(self, part: str) -> None:
        self._part = part
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, monitor: object, owner: type | None = None) -> _T:
        return getattr(getattr(monitor, self._part), self._name)

    def __set__(self, monitor: object, value: _T) -> None:
        setattr(getattr(monitor, self._part), self._name, value)


def _weakly(method: Callable[[], object]) -> Callable[[], object]:
    """``method`` (bound) called through a weak reference to its object: a part that calls back into the monitor
    does not keep it alive (its log's descriptor is closed when it is freed, with the garbage collector off too)."""
    ref = weakref.WeakMethod(method)  # type: ignore[arg-type]

    def call() -> object:
        bound = ref()
        return None if bound is None else bound()

    return call


class GradientMonitor:
    """Measures gradients during training, judges them with :mod:`moola_watch.rules`, writes the spec's
    console lines to the ``moola`` logger and appends JSONL records.

    When to measure: with ``every_n_steps=N``, gradient statistics on every N-th optimizer step and task
    balance on every ``balance_every_n_steps``-th (default N); steps are counted by :meth:`watch_optimizer`
    where attached (a step a GradScaler skips is not one), else by calls of :meth:`on_before_optimizer_step`.
    Without it, the spec's epochs: statistics on the first call of every ``log_frequency``-th epoch, balance
    on the first probe of every ``task_balance_frequency``-th. Records carry the optimizer step (1-based: the
    step the measured gradient is applied in) and the epoch where known.

    ``echo`` and ``warn`` take the console lines and warnings (default: the ``moola`` logger at INFO and
    WARNING, see :mod:`moola.utils.monitoring.console`; warnings go to ``echo`` when only that is given).
    Writing problems are one warning and never interrupt training. Beyond ``max_layer_norms`` tensors,
    per-layer norms are recorded by module prefix.

    With ``enabled=False`` every hook does only the plain work (``backward`` a plain backward) and nothing is
    measured, printed or written: a loop can call the hooks unconditionally.

    With ``end_on_sigterm`` (the default), while the run writes its log and SIGTERM has its default action, a
    SIGTERM (a scheduler stopping the job) first writes ``run_end`` ``interrupted``, then ends the process by
    that signal as it would have (:mod:`~moola.utils.monitoring.run_end`); a loop that handles SIGTERM itself
    (Lightning does) keeps its own handling, and a distributed job keeps the default action. With
    ``end_at_exit`` (the default), a run still open when the interpreter exits (a loop without ``with`` that
    never called :meth:`on_run_end`) is ended then: ``failed`` by the exception that reached the top level, else
    ``completed`` (:func:`~moola.utils.monitoring.run_end.at_exit`); the framework callbacks end their own runs.

    Acting on alerts: ``on_alert`` is called with each alert that starts firing (an exception in it is one
    warning); with ``halt_on="critical"`` (or ``"error"``) the first alert at or above that severity sets
    :attr:`halted_by`, which the loop checks to stop before the optimizer step applies the bad gradient
    (:attr:`should_stop`); ``run_end`` then says the run was halted and why.

    ``task_floors`` (task -> loss) are each task's training loss at the end of a run on that task alone (its
    weight 1, the others 0), where known: recorded in ``run_start``, they let the rules tell a stalled task that
    is near what it can reach from one starved short of it (``Thresholds.floor_progress``).
    """

    # The schedule's settings and the step count live in the cadence (:mod:`~moola.utils.monitoring.cadence`).
    log_frequency: _Delegated[int] = _Delegated("_cadence")
    task_balance_frequency: _Delegated[int] = _Delegated("_cadence")
    every_n_steps: _Delegated[int | None] = _Delegated("_cadence")
    balance_every_n_steps: _Delegated[int | None] = _Delegated("_cadence")
    epoch: _Delegated[int | None] = _Delegated("_cadence")  # the epoch the next records belong to
    steps_done: _Delegated[int] = _Delegated("_cadence")  # optimizer steps taken so far
    # Who writes, and what: the output's (:mod:`~moola.utils.monitoring.run_output`).
    rank: _Delegated[int] = _Delegated("_output")
    world_size: _Delegated[int] = _Delegated("_output")
    per_rank: _Delegated[bool] = _Delegated("_output")
    run_id: _Delegated[str] = _Delegated("_output")
    engine: _Delegated[rules.RuleEngine] = _Delegated("_output")

    def __init__(
        self,
        log_frequency: int = 10,
        *,
        every_n_steps: int | None = None,
        balance_every_n_steps: int | None = None,
        log_path: str | Path | None = None,
        stream: BinaryIO | None = None,
        thresholds: Thresholds | None = None,
        task_balance_frequency: int = 5,
        run_id: str | None = None,
        echo: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        per_rank: bool = False,
        max_layer_norms: int = MAX_LAYER_NORMS,
        on_alert: Callable[[Alert], None] | None = None,
        halt_on: str | None = None,
        enabled: bool = True,
        end_on_sigterm: bool = True,
        end_at_exit: bool = True,
        task_floors: Mapping[str, float] | None = None,
    ) -> None:
        for name, value in (
            ("log_frequency", log_frequency),
            ("task_balance_frequency", task_balance_frequency),
            ("every_n_steps", every_n_steps),
            ("balance_every_n_steps", balance_every_n_steps),
            ("max_layer_norms", max_layer_norms),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        try:
            self.task_floors = checked_floors(task_floors or {})
        except ValueError as exc:
            raise ValueError(f"task_floors: {exc}") from None
        self._halting = Halting(halt_on) if halt_on is not None else None
        self.enabled = enabled
        self._cadence = Cadence(log_frequency, task_balance_frequency, every_n_steps, balance_every_n_steps)
        self.max_layer_norms = max_layer_norms
        self.thresholds = thresholds or Thresholds()
        self._output = RunOutput(
            log_path if stream is None else stream,
            run_id=run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 10000:04d}{id(self) % 100:02d}",
            run_id_given=run_id is not None,
            engine=rules.RuleEngine(self.thresholds),
            clock=clock,
            echo=echo,
            warn=warn,
            per_rank=per_rank,
            silent=not enabled,
            on_alert=on_alert,
            halting=self._halting,
            start_run=_weakly(self.on_run_start),  # no cycle: a monitor let go of is freed at once
        )
        self._stats = StatsProbe(self._cadence, self._output)
        self._balance = BalanceProbe(self._cadence, self._output)
        # The model the hooks were last given, until run_start names it: an epoch's record may come first.
        self._model: weakref.ref[nn.Module] | None = None
        self.end_on_sigterm = end_on_sigterm
        self._undo_sigterm: Callable[[], None] = lambda: None  # the SIGTERM handler on_run_start set, if any
        self.end_at_exit = end_at_exit
        self._epoch_losses = EpochTaskLosses()  # the task losses given this epoch, for its record
        self._undo_at_exit: Callable[[], None] = lambda: None

    @property
    def log_path(self) -> Path | None:
        return self._output.log_path

    @property
    def records_written(self) -> int:
        """Records this process appended to its log so far (0 without one, or where it could not be written: a
        path that is a directory or read-only gives one warning and training goes on)."""
        return self._output.records_written

    @property
    def should_stop(self) -> bool:
        """True once an alert at or above ``halt_on`` has fired (here, or under torch.distributed on another
        rank): stop before the next optimizer step."""
        return self._halting is not None and self._halting.should_stop

    @property
    def halt_on(self) -> str | None:
        return self._halting.halt_on if self._halting else None

    @property
    def halted_by(self) -> Alert | None:
        """The alert this process halted on, if any."""
        return self._halting.halted_by if self._halting else None

    @property
    def halt_reason(self) -> str | None:
        """Why the run halts, in words (the alert, the step it halted at, and under torch.distributed the rank it
        was seen on), or None while it goes on."""
        return self._halting.reason(self.rank, self.world_size) if self._halting else None

    @property
    def step(self) -> int:
        """The optimizer step now being prepared (1-based): the one the current gradients are applied in."""
        return self._cadence.step

    # -------------------------------------------------------------- schedule

    def stats_due(self) -> bool:
        """True if :meth:`on_before_optimizer_step` would measure now."""
        return self.enabled and self._cadence.stats_due()

    def balance_due(self) -> bool:
        """True if a task-balance probe would measure now (throttled whichever method is called)."""
        return self.enabled and self._cadence.balance_due()

    def watch_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Count ``optimizer``'s steps, a step a GradScaler skips not being one (see
        :meth:`~moola.utils.monitoring.cadence.Cadence.watch_optimizer`: with several, the first counts; a
        restored one goes on from its own count)."""
        self._cadence.watch_optimizer(optimizer)

    def at_step(self, step: int) -> None:
        """Take a framework's own step count: ``step`` (1-based) is the optimizer step now being prepared, the
        one the next measurements are numbered with and scheduled by."""
        self._cadence.at_step(step)

    def _meet(self, model: nn.Module) -> None:
        """Remember ``model`` (weakly, never keeping it alive) until ``run_start`` is written: a record written
        before anything was measured (an epoch's, ``run_end``'s) opens the log with a ``run_start`` naming it."""
        if not self._output.started and isinstance(model, nn.Module):  # (anything else: the measurement says what)
            self._model = weakref.ref(model)

    def on_epoch_start(self, epoch: int) -> None:
        """The epoch the next records belong to."""
        self.epoch = whole(epoch)

    # -------------------------------------------------------------- hooks

    def on_run_start(
        self, model: nn.Module | None = None, *, model_name: str | None = None, config: dict[str, Any] | None = None
    ) -> None:
        """Write ``run_start`` (done by the first record if not called before). Without ``model``, the model the
        hooks were given so far, if any: the record says ``unknown`` only when no hook has been given one."""
        if self._output.started or not self.enabled:
            return
        if model is None and self._model is not None:
            model = self._model()
        self._model = None
        self._output.open()
        writer = self._output.writer
        if writer is not None and self.end_on_sigterm:  # a scheduler stopping the job: the log says so
            self._undo_sigterm = on_sigterm(self.on_run_end)
        if writer is not None and self.end_at_exit:
            self._undo_at_exit = at_exit(self.on_run_end)
        began = self._cadence.first_known()
        self._emit(
            schema.RUN_START,
            **model_fields(model, model_name, self.max_layer_norms),
            config=config_value(config or {}),
            thresholds=self.thresholds.to_dict(),
            **({"task_floors": self.task_floors} if self.task_floors else {}),
            log_frequency=self.log_frequency,
            task_balance_frequency=self.task_balance_frequency,
            every_n_steps=self.every_n_steps,
            balance_every_n_steps=self.balance_every_n_steps,
            versions={"torch": torch.__version__, "moola": __version__, "schema": schema.SCHEMA_VERSION},
            host=socket.gethostname(),
            pid=os.getpid(),
            process=this_process(),  # what tells this process from a later one given its pid: a watcher knows it died
            log_path=str(writer.path.resolve()) if writer and writer.path else None,
            rank=self.rank,
            world_size=self.world_size,
            **({"first_step": began[0], "first_epoch": began[1]} if began else {}),
        )

    def on_before_backward(
        self,
        model: nn.Module,
        losses: Mapping[str, torch.Tensor],
        weights: Mapping[str, float | torch.Tensor] | None = None,
        *,
        shared_parameters: Sequence[nn.Parameter] | None = None,
        representation: torch.Tensor | None = None,
    ) -> TaskGradients | None:
        """If a balance probe is due, measure the balance of the named task ``losses`` (``weights``: each one's
        weight in the total, default 1) without touching the graph or ``.grad`` (see
        :func:`~moola.utils.monitoring.task_balance.compute_task_balance`), record and return it. Safe
        wherever someone else does the backward (DDP, FSDP, accelerate, a GradScaler). None when not due or
        not measurable (one warning saying why)."""
        require_named(losses)
        if self.enabled:
            self._epoch_losses.add(losses)
        cadence = self._cadence
        cadence.note_began()
        self._meet(model)
        if not self._balance.takes(losses) or not self.balance_due():
            return None
        cadence.last_balance_at = (cadence.epoch, cadence.step)
        balance = self._guarded(
            "task balance",
            lambda: self._balance.measure(
                model, losses, weights, shared_parameters=shared_parameters, representation=representation
            ),
            model,
        )
        if balance is not None:
            self.record_balance(balance)
        return balance

    def backward(
        self,
        model: nn.Module,
        losses: Mapping[str, torch.Tensor],
        weights: Mapping[str, float | torch.Tensor] | None = None,
        *,
        scaler: torch.amp.GradScaler | None = None,
        shared_parameters: Sequence[nn.Parameter] | None = None,
    ) -> TaskGradients | None:
        """The step's plain backward of ``sum(weight * loss)`` (through ``scaler`` if given), after
        :meth:`on_before_backward` measured the task balance if a probe is due: the step gets exactly the
        gradients it would have without moola, whatever hooks, custom autograd functions or synchronisation
        its backward holds. A weight may be a tensor (a learnable loss weight): the total keeps its graph."""
        require_named(losses)
        unused = sorted(set(weights or {}) - set(losses), key=str)
        if unused:  # a batch without some tasks' labels, or a misspelt task: the loop's own sum ignores it too
            self.warn_once("unused-weights", f"note: weights name tasks without a loss in this step: "
                           f"{', '.join(map(str, unused))} (losses: {', '.join(map(str, losses))}); their weights "
                           "are left out of its total, as a sum over the losses leaves them")  # fmt: skip
        total = sum((weights or {}).get(name, 1.0) * loss for name, loss in losses.items())
        assert isinstance(total, torch.Tensor)
        balance = self.on_before_backward(model, losses, weights, shared_parameters=shared_parameters)
        (scaler.scale(total) if scaler is not None else total).backward()
        return balance

    def on_before_optimizer_step(
        self,
        model: nn.Module,
        *,
        scaler: torch.amp.GradScaler | None = None,
        step: int | None = None,
        still_scaled: bool | Collection[torch.Tensor] = False,
    ) -> dict[str, Any] | None:
        """Measure the gradients now in ``model`` if due, after any ``scaler.unscale_(optimizer)`` and before
        clipping; return the ``grad_stats`` body. ``step`` overrides the counted step (a framework's own).

        With mixed precision pass the ``scaler``: the scale is recorded, and an inf is recorded as the scaler's
        overflow (a skipped step) rather than a model fault. ``still_scaled``: the gradients still carry the
        scale (measured before ``unscale_``, as a framework that unscales inside its clip leaves them): every
        norm is divided by it; or the parameters whose gradients still carry it, the others' being unscaled
        already (several optimizers, only the stepping one's unscaled): only their norms are divided."""
        cadence = self._cadence
        if step is not None:
            cadence.at_step(step)
        if cadence.began is None:  # (checked here: this runs every step)
            cadence.note_began()
        if not self._output.started:
            self._meet(model)
        stats = None
        if self.enabled and cadence.every_n_steps is None and cadence.epoch is None:
            self.warn_once(
                "no-epoch",
                "WARNING: GradientMonitor counts epochs but was given none: pass every_n_steps= to measure by "
                "optimizer steps, or the epoch to update()/on_epoch_start()",
            )
        if self.stats_due() or cadence.remeasure == (cadence.epoch, cadence.step):
            cadence.last_stats_at = (cadence.epoch, cadence.step)
            cadence.remeasure = None
            stats = self._guarded(
                "gradient statistics",
                lambda: self._stats.measure(
                    model, scaler, still_scaled, thresholds=self.thresholds, max_layer_norms=self.max_layer_norms
                ),
                model,
            )
            if stats is not None and "amp" in stats and stats["amp"]["overflow"]:
                cadence.last_stats_at = None  # the scaler skips this step: measure its retry, which is applied
            elif stats is not None and stats["nonfinite_count"]:
                # A loop may skip a step whose gradients are NaN (zero_grad, next batch): its retry is the step
                # applied, so measure it too should it come (and a call again at this step is no accumulation)
                cadence.remeasure = (cadence.epoch, cadence.step)
        elif cadence.counting_optimizer and step is None and cadence.last_stats_at == (cadence.epoch, cadence.step):
            self.warn_once(
                "again",
                f"WARNING: on_before_optimizer_step was called again before the optimizer stepped (step "
                f"{cadence.step}): with gradient accumulation call it once per optimizer step, after the last "
                "micro-batch's backward; its first call measured a partial gradient",
            )
        if self._halting is not None:  # (no call on the every-step path of a run without halt_on)
            self.agree_on_halting()
        if cadence.after_call(step_given=step is not None):
            self.warn_once(
                "stalled",
                f"WARNING: the optimizer given to watch_optimizer has not stepped in the last {STALLED_CALLS} calls "
                f"of on_before_optimizer_step: from step {cadence.step} these calls count the steps. If a new "
                "optimizer trains the model, give it to watch_optimizer(new) (a new one replaces the old)",
            )
        return stats

    def agree_on_halting(self) -> None:
        """Under torch.distributed with ``halt_on``, one small all-reduce: if any rank halted, every rank learns
        why and stops at this step (until then, and without ``halt_on`` or with one process, nothing). A
        collective: every rank calls it at the same point of each step. :meth:`on_before_optimizer_step` does; a
        loop that calls that only on some steps calls this on every step."""
        if self._halting is not None:
            self._halting.agree(self.rank, self.world_size, lambda text: self.warn_once("halt agreement", text))

    def update(
        self, epoch: int, model: nn.Module, step: int | None = None, *, scaler: torch.amp.GradScaler | None = None
    ) -> dict[str, Any] | None:
        """The spec's call, after ``backward()`` and before ``optimizer.step()``, in epoch ``epoch``: see
        :meth:`on_before_optimizer_step`."""
        self.epoch = whole(epoch)
        return self.on_before_optimizer_step(model, scaler=scaler, step=step)

    def on_epoch_end(self, epoch: int, *, train_loss: Any, **fields: Any) -> None:
        """Record an ``epoch`` record: ``train_loss``, and any of ``val_loss``, ``task_losses`` and ``metrics``
        (name -> number; ``task_losses`` by default each task's mean loss over the epoch's batches whose losses
        the hooks were given), ``lr`` (a number or one per parameter group), ``duration_s``. Tensors and numpy
        values are turned into numbers; a value no reader would accept is left out with one warning. The
        records after it belong to epoch ``epoch + 1`` until :meth:`on_epoch_start` says otherwise (a loop
        that calls only this hook must not have the next epoch's records carry this one's number)."""
        self.epoch = whole(epoch)
        losses = self._epoch_losses.means()
        if "task_losses" not in fields and losses:  # the loop gave none: the means of those the hooks were given
            fields["task_losses"] = losses
        values = plain({"train_loss": train_loss, **fields})
        if "lr" in values:
            values["lr"], every_lr = learning_rate(values["lr"])
            if every_lr is not None:
                values["lrs"] = every_lr
        # No optimizer step counted (the spec's epoch API): no step, rather than every epoch drawn at step 0
        self._emit(schema.EPOCH, epoch=epoch, step=self.steps_done or None, **values)
        self.epoch = self.epoch + 1 if type(self.epoch) is int else None

    def on_run_end(self, status: str = "completed", error: str | None = None) -> MonitoringSummary:
        """Write ``run_end`` (with a ``run_start`` first if nothing was measured, so a log is never empty),
        synced to disk; print the summary block; release the log."""
        if self._output.ended or not self.enabled:
            return self.engine.summary()
        self._output.ended = True
        if self.should_stop and status == "completed":
            status, error = "failed", self.halt_reason
        if self._output.target is not None or self._output.started:  # a run_start is written first if none was
            summary = self.engine.summary().to_dict()
            self._emit(
                schema.RUN_END,
                epoch=self._output.last_epoch if self._output.last_epoch is not None else self.epoch,
                step=self.steps_done,
                status=status,
                error=error,
                summary=summary,
                **({"tasks": list(self._balance.tasks)} if self._balance.tasks else {}),
            )
        summary = self.engine.summary()
        self._output.echo("\n" + "\n".join(summary.lines()))
        self._output.close()
        self._undo_sigterm()
        self._undo_at_exit()
        return summary

    def get_summary(self) -> MonitoringSummary:
        """The spec's summary of everything measured so far."""
        return self.engine.summary()

    def __enter__(self) -> GradientMonitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.on_run_end(*ending(exc))

    def record_balance(self, balance: TaskGradients) -> None:
        """Print and record a balance, e.g. one a :class:`~moola.utils.monitoring.task_balance.RepresentationTap`
        measured, at the current step and epoch."""
        unknown = sorted(set(self.task_floors) - set(balance.norms))
        if unknown:  # a misspelt task: its floor would silently judge nothing
            self.warn_once("floors without a task", f"WARNING: task_floors names tasks this balance sample has no "
                           f"loss for: {', '.join(unknown)} (its tasks: {', '.join(map(str, balance.norms))}); a "
                           "floor judges only the task of its name")  # fmt: skip
        self._emit(schema.TASK_BALANCE, **self._balance.record(balance, self.thresholds))

    def record_weights(self, weights: Mapping[str, float], *, previous: Mapping[str, float], method: str) -> None:
        """Record (and say) that an automatic balancer changed the task loss weights."""
        change = ", ".join(f"{name} {previous.get(name, math.nan):.3g} -> {w:.3g}" for name, w in weights.items())
        self._output.echo(f"{PREFIX} Loss weights ({method}): {change}")
        self._emit(
            schema.LOSS_WEIGHTS,
            epoch=self.epoch,
            step=self.step,
            weights=dict(weights),
            previous=dict(previous),
            method=method,
        )

    def _guarded(self, what: str, measure: Callable[[], _T], model: nn.Module | None = None) -> _T | None:
        """Run a measurement; a failure is one warning per kind of failure, never a crashed run."""
        try:
            if model is not None and not self._output.started:
                self.on_run_start(model)
            return measure()
        except BalanceUnavailable as exc:
            self.warn_once(f"{what}: {exc}", f"WARNING: {what}: {exc}")
        except Exception as exc:  # monitoring must never take training down
            self.warn_once(
                what, f"WARNING: {what} could not be measured ({type(exc).__name__}: {exc}); training continues"
            )
        return None

    def warn_once(self, key: str, message: str) -> None:
        """Give ``message`` through the monitor's warning channel, the first time ``key`` is seen."""
        self._output.warn_once(key, message)

    def _emit(self, kind: str, **fields: Any) -> None:
        """Write a record of ``kind`` from ``fields`` that come from the user (see
        :meth:`~moola.utils.monitoring.run_output.RunOutput.emit`); nothing while disabled."""
        if self.enabled:
            self._output.emit(kind, fields)
