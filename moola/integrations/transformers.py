"""Hugging Face Trainer: :class:`GradientMonitorCallback`, the monitor's hooks at a ``transformers.Trainer``'s
moments.

The Trainer clips the gradients before any callback sees them (``on_pre_optimizer_step`` comes after the
clip) and logs the pre-clip total as ``grad_norm``. So on every ``every_n_steps``-th optimizer step the callback
measures at the end of the step's last backward instead: the gradients are then whole (accumulated, and
synchronised by DDP, whose own end-of-backward work runs first) and not yet clipped, and their total is the
``grad_norm`` the Trainer logs under the same step. Records are numbered ``state.global_step`` as the Trainer
logs them: the optimizer step the gradients are applied in.

Task balance: the Trainer does not see per-task losses. A model whose ``forward`` sets ``self.task_losses``
(task name -> loss tensor) and optionally ``self.task_weights`` is measured right after that forward; a
``compute_loss`` override calls :meth:`GradientMonitorCallback.on_task_losses` instead (see the README). Both
measure by ``torch.autograd.grad`` before the backward: the step's gradients are untouched.

Epochs: an ``epoch`` record per epoch, with its training loss (see :meth:`EpochNotes.fields`: the mean of the
``loss`` its training forwards returned, kept on the device and summed without a sync per step; under DDP the
mean of the ``loss`` the Trainer logged in it, every rank's), the learning rate, and the evaluation it ran for
that epoch (``eval_loss`` as ``val_loss``, every other ``eval_*`` metric under ``metrics``). The Trainer
evaluates after ``on_epoch_end``, so the record is written when the next epoch begins or training ends. Only an
epoch with neither (a ``compute_loss`` that computes the loss outside the model, ``logging_steps`` longer than
the epoch) has no record, with one warning: the record contract requires ``train_loss``.

Under fp16 the gradients at the end of the backward still carry the GradScaler's scale (the Trainer unscales
them inside its clip): the callback divides the norms by the scale, and a step the scaler skips for an
overflow is recorded as such.

How the run ends: ``on_train_end`` writes ``completed``. The Trainer tells its callbacks of no exception, so a
``trainer.train()`` that raises is known by what comes after it (:class:`_Run`): inside ``with callback:`` the
exception itself; else the next ``trainer.train()`` on the same log, the callback being freed, or the process
exiting ends the run ``failed`` (with the exception when it reached the top level, as an uncaught one does:
``interrupted`` for Ctrl-C), so that the log says so and is released. ``run_end`` is numbered
``state.global_step``, the optimizer steps taken.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import torch
import transformers
from accelerate.state import GradientState
from torch import nn
from torch.utils.hooks import RemovableHandle

from moola.integrations.settings import MonitorSettings
from moola.utils.monitoring.monitor import GradientMonitor
from moola.utils.monitoring.run_end import ending

TASK_LOSSES = "task_losses"
TASK_WEIGHTS = "task_weights"
#: Evaluation log entries that are the evaluation's speed, not a metric of the model.
EVAL_TIMINGS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


class EpochNotes:
    """What one epoch's training did, until its record is written: the losses its training forwards returned, the
    losses the Trainer logged, the learning rate, and the evaluation's metrics. ``every_forward``: this process
    sees every training forward (one process; under DDP each rank sees its own share of the batches)."""

    def __init__(self, epoch: int, *, every_forward: bool) -> None:
        self.epoch = epoch
        self.every_forward = every_forward
        self.ended = False
        self.losses: list[float] = []
        self.lr: float | None = None
        self.evaluation: dict[str, float] = {}
        self.returned: torch.Tensor | None = None  # the sum of the losses the epoch's training forwards returned
        self.finite_returned: torch.Tensor | None = None  # how many of those were finite (counted on the device)
        self.forwards = 0
        self.finite_batches: torch.Tensor | None = None  # batches whose task losses were all finite (on the device)
        self.steps = 0  # optimizer steps taken in the epoch
        self.per_step = False  # a returned loss is a share of its step's (normalised by the whole step's items)

    def see(self, loss: torch.Tensor, *, share_of_step: bool) -> None:
        """One training forward's returned loss: summed where it lies, without waiting for the device.
        ``share_of_step``: the forward was given ``num_items_in_batch`` (the Trainer does so for a model that
        takes loss kwargs, such as a causal LM): its loss is normalised by the items of the whole accumulated
        step, so the step's micro-batch losses add up to the step's loss rather than averaging to it."""
        loss = loss.detach().float().reshape(())
        finite = torch.isfinite(loss).int()
        self.returned = loss if self.returned is None else self.returned + loss
        self.finite_returned = finite if self.finite_returned is None else self.finite_returned + finite
        self.forwards += 1
        self.per_step |= share_of_step

    def see_task_losses(self, losses: Mapping[str, torch.Tensor]) -> None:
        """One batch's task losses (a ``compute_loss`` override's, where the model returns no loss): counted
        finite when every one is, on the device."""
        finite = torch.stack([torch.isfinite(loss.detach()).all() for loss in losses.values()]).all().int()
        self.finite_batches = finite if self.finite_batches is None else self.finite_batches + finite

    def add(self, logs: Mapping[str, Any]) -> None:
        """One ``on_log`` entry: a training log (``loss``, ``learning_rate``) or an evaluation (``eval_*``)."""
        if isinstance(logs.get("loss"), int | float):
            self.losses.append(float(logs["loss"]))
        if isinstance(logs.get("learning_rate"), int | float):
            self.lr = float(logs["learning_rate"])
        for name, value in logs.items():
            if name.startswith("eval_") and name not in EVAL_TIMINGS and isinstance(value, int | float):
                self.evaluation[name] = float(value)

    def fields(self) -> dict[str, Any] | None:
        """The ``epoch`` record's fields, or None without a training loss. The training loss is the mean of the
        losses the epoch's training forwards returned, exactly the epoch's, where this process saw them all or
        the Trainer logged none; else (DDP) the mean of the losses the Trainer logged in the epoch (every rank's,
        but over its logging windows, which need not start with the epoch). A loss the Trainer logged is not
        taken where it is known to hide a NaN: its ``logging_nan_inf_filter`` (on by default) logs a NaN loss as
        the mean of the finite ones before it, 0.0 when there were none, so an epoch whose every returned loss,
        or every batch of task losses, was non-finite is recorded NaN."""
        nonfinite = self._every_loss_nonfinite()
        if self.returned is not None and (self.every_forward or not self.losses or nonfinite):
            train_loss = self.returned.item() / (self.steps if self.per_step and self.steps else self.forwards)
        elif nonfinite:  # no returned loss: a compute_loss override's task losses said so
            train_loss = math.nan
        elif self.losses:
            train_loss = sum(self.losses) / len(self.losses)
        else:
            return None
        metrics = {name: value for name, value in self.evaluation.items() if name != "eval_loss"}
        return {"train_loss": train_loss, "val_loss": self.evaluation.get("eval_loss"), "lr": self.lr,
                "metrics": metrics}  # fmt: skip

    def _every_loss_nonfinite(self) -> bool:
        """Whether every loss the epoch's forwards returned, or, with none returned, every batch of task losses
        given, was NaN or infinite (False with neither); one host sync."""
        counted = self.finite_returned if self.finite_returned is not None else self.finite_batches
        return counted is not None and counted.item() == 0


def returned_loss(output: Any) -> torch.Tensor | None:
    """The loss a model's forward returned (``output["loss"]``, as the Trainer reads it from a ``ModelOutput``
    or a dict), if it is a one-element tensor; else None."""
    loss = output.get("loss") if isinstance(output, Mapping) else None
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


def run_config(args: transformers.TrainingArguments) -> dict[str, Any]:
    """What ``run_start`` records of the training arguments."""
    return {
        "framework": f"transformers {transformers.__version__}",
        "lr": args.learning_rate,
        "batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "max_grad_norm": args.max_grad_norm,
        "max_steps": args.max_steps,
        "epochs": args.num_train_epochs,
        "seed": args.seed,
        "precision": "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32",
    }


def after_backward(callback: Callable[[], None]) -> None:
    """Run ``callback`` when the backward pass now running has finished: after every gradient is accumulated
    and after the end-of-backward work DDP and FSDP queue (their gradient synchronisation), which a callback
    queued from a queued callback follows. Call it from inside the backward (a gradient hook)."""
    engine = torch.autograd.Variable._execution_engine
    engine.queue_callback(lambda: engine.queue_callback(callback))


#: run_end's error for a training loop that an exception ended where the callback could not see it.
UNSEEN_EXCEPTION = (
    "an exception ended the training loop (the Trainer tells its callbacks of none: run trainer.train() inside "
    "`with callback:` to have it recorded)"
)


def raised_in_training(exc: BaseException, callback: transformers.TrainerCallback) -> bool:
    """``exc`` came out of the training of a Trainer that ``callback`` is a callback of: its traceback passes
    through a method of that Trainer (``train``, the training loop)."""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, transformers.Trainer) and callback in owner.callback_handler.callbacks:
            return True
        tb = tb.tb_next
    return False


def weakly(method: Callable[..., object]) -> Callable[..., None]:
    """A hook that calls ``method`` (bound) through a weak reference to its object, and returns None: a hook left
    on the model by a run that raised does not keep the callback (and its run) alive once the user let go of it."""
    ref = weakref.WeakMethod(method)

    def hook(*args: Any, **kwargs: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args, **kwargs)

    return hook


def same_log(a: Path | None, b: Path | None) -> bool:
    """``a`` and ``b`` name the same log file (None: no log)."""
    return a is not None and b is not None and a.resolve() == b.resolve()


class _Run:
    """One ``trainer.train()`` of a callback, from ``on_train_begin`` until its ``run_end``. It holds the monitor,
    the Trainer's state (whose ``global_step`` the Trainer moves) and the hooks on the model, never the callback,
    the Trainer or the model: a run whose callback was let go of is still ended, when the callback is freed or the
    process exits, and its hooks removed."""

    #: The runs of this process that have not ended (a train() that raised outside ``with callback:``, or one
    #: still training).
    unended: ClassVar[set[_Run]] = set()

    def __init__(
        self, monitor: GradientMonitor, state: transformers.TrainerState, callback: GradientMonitorCallback
    ) -> None:
        self.monitor, self.state = monitor, state
        self.pid = os.getpid()
        self.callback = weakref.ref(callback)
        self.exception_before = getattr(sys, "last_value", None)  # an uncaught exception already there is not ours
        self.forward_hook: RemovableHandle | None = None
        self.grad_hooks: list[RemovableHandle] = []  # on a step due to be measured, until its backward ends
        _Run.unended.add(self)
        # Freed unended, or unended when the process exits (``finalize`` calls it then): ended as one that raised.
        self._finalizer = weakref.finalize(callback, self.end_raised)

    def end(self, status: str, error: str | None = None) -> None:
        """Write ``run_end`` (nothing once written), numbered ``state.global_step``: the steps taken, also when
        the run stopped after a step that measured nothing, before the next began."""
        if self not in _Run.unended:
            return
        _Run.unended.discard(self)
        self._finalizer.detach()
        self.disarm()
        if self.forward_hook is not None:
            self.forward_hook.remove()
        self.monitor.at_step(self.state.global_step + 1)
        self.monitor.on_run_end(status, error)

    def disarm(self) -> None:
        """Remove the gradient hooks (a step's measurement is done, or the run ended)."""
        for handle in self.grad_hooks:
            handle.remove()
        self.grad_hooks = []

    def end_raised(self) -> None:
        """End a run whose training loop an exception ended without ``with callback:``: ``failed`` with that
        exception if it reached the top level since the run began (Python keeps an uncaught one as
        ``sys.last_value``, as IPython does a cell's) and came out of this callback's Trainer, else ``failed``
        with :data:`UNSEEN_EXCEPTION`. Not in a forked child: its exit does not end its parent's run."""
        if os.getpid() != self.pid:
            return
        exc, callback = getattr(sys, "last_value", None), self.callback()
        if exc is not None and exc is not self.exception_before and callback and raised_in_training(exc, callback):
            self.end(*ending(exc))
        else:
            self.end("failed", UNSEEN_EXCEPTION)


def end_earlier_runs(callback: GradientMonitorCallback, log: Path | None, state: transformers.TrainerState) -> None:
    """Before ``callback``'s new run (of the training loop whose state is ``state``): end, as runs that raised,
    its own earlier run and any other run of this process on the same ``log`` that never ended. Each training
    loop has its own state, and one log takes one writer at a time: such a run's loop was ended by an
    exception. (Another callback of this very loop on the same log is a mistake its lock warning names, not a
    run that raised.)"""
    for run in list(_Run.unended):
        earlier = run.callback() is callback or same_log(run.monitor.log_path, log)
        if earlier and run.pid == os.getpid() and run.state is not state:
            run.end_raised()


class GradientMonitorCallback(MonitorSettings, transformers.TrainerCallback):
    """Gradient statistics every ``every_n_steps`` optimizer steps and task balance every
    ``balance_every_n_steps`` (default the same), appended to ``log_path``; ``monitor_options`` go to
    :class:`~moola.utils.monitoring.GradientMonitor` (``thresholds``, ``run_id``, ...).

    A run that raises ends ``failed`` (or ``interrupted``, Ctrl-C) with the exception inside ``with callback:``;
    without it the Trainer tells the callback of no exception, and the run ends ``failed`` when the next
    ``trainer.train()`` on its log begins, when the callback is freed or when the process exits (with the
    exception if it went uncaught, see :class:`_Run`)."""

    def __init__(self, log_path: str | Path | None = None, **settings: Any) -> None:
        super().__init__(log_path, **settings)
        self._model: nn.Module | None = None
        self._step = 1  # the optimizer step being prepared, 1-based: state.global_step once it is taken
        self._scaler: torch.amp.GradScaler | None = None
        self._queued = False
        self._epoch: EpochNotes | None = None
        self._items_scale = 1  # what a loss normalised by all ranks' items is multiplied by (set at train begin)
        self._run: _Run | None = None

    # -------------------------------------------------------------- Trainer events

    def on_train_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        monitor = self._make_monitor()
        end_earlier_runs(self, monitor.log_path, state)  # an earlier train() that raised: its run ends, its log is free
        self.monitor, self._epoch, self._queued = monitor, None, False
        self._run = _Run(monitor, state, self)
        monitor.at_step(state.global_step + 1)  # restored by now when resuming: run_start says where it began
        monitor.on_epoch_start(int(state.epoch or 0) + 1)
        monitor.on_run_start(model, config=run_config(args))
        self._model = model
        # With average_tokens_across_devices a returned loss divides by every rank's items, and the Trainer
        # multiplies it back by the number of processes: so do we, for the epoch's loss from the forwards.
        self._items_scale = args.world_size if getattr(args, "average_tokens_across_devices", False) else 1
        self._run.forward_hook = model.register_forward_hook(weakly(self._on_forward), with_kwargs=True)
        self._scaler = getattr(optimizer, "scaler", None)  # fp16: accelerate's optimizer holds the GradScaler

    def on_epoch_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._write_epoch(state.global_step)
        self._epoch = EpochNotes(int(state.epoch or 0) + 1, every_forward=args.world_size == 1)
        self.monitor.on_epoch_start(self._epoch.epoch)

    def on_log(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._epoch is not None and logs:
            self._epoch.add(logs)

    def on_epoch_end(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self._epoch is not None:
            self._epoch.ended = True  # its evaluation comes next: written at the next epoch or the end

    def _write_epoch(self, global_step: int) -> None:
        """Write the ended epoch's record, numbered ``global_step``: the last optimizer step taken in it (the
        monitor counts only to the last step it prepared, one short when the epoch's last step measured nothing)."""
        notes, self._epoch = self._epoch, None
        if notes is None or not notes.ended:
            return
        self.monitor.at_step(global_step + 1)
        fields = notes.fields()
        if fields is not None:
            self.monitor.on_epoch_end(notes.epoch, **fields)
        else:
            self._no_epoch_record(
                notes.epoch,
                "the Trainer logged no training loss and the model's forward returned none",
                "set logging_steps to at most the steps of an epoch",
            )

    def on_step_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._step = state.global_step + 1
        self.monitor.at_step(self._step)
        self._run.disarm()
        if self.monitor.stats_due():
            hook = weakly(self._on_gradient)
            self._run.grad_hooks = [
                p.register_post_accumulate_grad_hook(hook) for p in self._model.parameters() if p.requires_grad
            ]

    def on_step_end(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        # The step's statistics are measured only when due, but an alert from a balance probe can come on any
        # step: under torch.distributed the ranks agree on every step, or one stops while the others wait.
        if self._epoch is not None:
            self._epoch.steps += 1
        self.monitor.agree_on_halting()
        if self.monitor.should_stop:  # halt_on: the Trainer gives a callback no way to skip the step itself
            control.should_training_stop = True

    def on_train_end(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._write_epoch(state.global_step)
        self._run.end("completed")

    # -------------------------------------------------------------- task balance

    def on_task_losses(
        self, model: nn.Module, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None
    ) -> None:
        """Record the balance of this batch's task ``losses`` (each one's weight in the total: ``weights``,
        default 1) if a probe is due; call it in ``compute_loss`` before returning the loss."""
        if self._epoch is not None:  # the model returned no loss: whether its epoch's losses were finite is here
            self._epoch.see_task_losses(losses)
        self._balance(model, losses, weights)

    def _balance(
        self, model: nn.Module, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None
    ) -> None:
        self.monitor.at_step(self._step)
        self.monitor.on_before_backward(model, losses, weights)

    def _on_forward(self, module: nn.Module, _args: Any, kwargs: Mapping[str, Any], output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # an evaluation, not a training step
        loss = returned_loss(output)
        if loss is not None and self._epoch is not None:
            share = kwargs.get("num_items_in_batch") is not None
            self._epoch.see(loss * self._items_scale if share else loss, share_of_step=share)
        losses = getattr(module, TASK_LOSSES, None)
        if losses:
            self._balance(module, losses, getattr(module, TASK_WEIGHTS, None))

    # -------------------------------------------------------------- gradient statistics

    def _on_gradient(self, _parameter: torch.Tensor) -> None:
        if not self._queued:
            self._queued = True
            after_backward(self._on_backward_end)

    def _on_backward_end(self) -> None:
        self._queued = False
        if GradientState().sync_gradients:  # the step's last micro-batch: these are the step's gradients
            self._run.disarm()
            self.monitor.on_before_optimizer_step(self._model, step=self._step, scaler=self._scaler, still_scaled=True)

    # -------------------------------------------------------------- with callback: trainer.train()

    def __enter__(self) -> GradientMonitorCallback:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._run is not None:
            self._run.end(*ending(exc))
