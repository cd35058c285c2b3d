"""Lightning: :class:`GradientMonitorCallback`, the monitor's hooks at a ``lightning.Trainer``'s moments.

- gradient statistics in ``on_before_optimizer_step``: after the backward (and, under ``16-mixed``, after the
  precision plugin's ``scaler.unscale_``), before gradient clipping; numbered ``trainer.global_step + 1``, the
  optimizer step the gradients are applied in (``trainer.global_step`` once it is taken);
- under manual optimization (``automatic_optimization = False``) Lightning's ``global_step`` counts every
  optimizer's ``step()`` (two optimizers: two a batch), and each ``opt.step()`` calls
  ``on_before_optimizer_step``. A batch is measured once, at its first ``opt.step()``, before any optimizer of
  the batch has stepped (or zeroed its gradients): every gradient its backward produced, not just the last
  optimizer's parameters. Every record of a batch (gradient statistics, task balance) is numbered
  ``trainer.global_step + 1`` as the batch began, and ``every_n_steps`` counts those steps (two optimizers,
  ``every_n_steps=8``: every fourth batch). Under ``16-mixed`` only the stepping optimizer's gradients are
  unscaled at that moment: the others' norms are divided by the scale. Gradients a backward between two of a
  batch's steps produces (a GAN's alternating updates) come after the measurement: one warning names them;
- task balance in ``on_before_backward``, from the LightningModule's attribute ``task_losses`` (task name ->
  loss tensor of the current batch, set in ``training_step``) and optional ``task_weights`` (name -> weight in
  the total): measured by ``torch.autograd.grad`` on the shared parameters, so the step's gradient and any
  DDP synchronisation are untouched. Only the losses ``training_step`` set for *this* batch are measured: a
  loss tensor the attribute already held when the batch started (a step that set no ``task_losses``, or not
  every task's) is an earlier step's and is left out, so a batch without two fresh task losses is not
  measured. The attribute itself is left as the module set it (the callback never assigns to it);
- an ``epoch`` record at each training epoch's end, with the training loss logged under one of
  :data:`TRAIN_LOSS_NAMES` and every other metric the epoch logged; an epoch without one gets no record (the
  record contract requires ``train_loss``), and one warning names the metrics it logged. A loss logged per step
  only (``self.log``'s default in ``training_step``) is the mean of the values the epoch's batches logged, not
  its last batch's (:class:`StepLosses`);
- ``run_start`` when training starts (or when the fit fails before it, in the sanity check), ``run_end`` when
  it ends: ``completed``, ``failed`` (with the error) or ``interrupted`` (Ctrl-C).

The monitor is made in ``on_fit_start``, once the strategy has set up the process group: under DDP every rank
measures and only rank 0 writes; its gradient statistics are of the all-reduced gradients, its task balance of
rank 0's batch.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import lightning
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from moola.integrations.settings import MonitorSettings
from moola.utils.monitoring.run_end import SIGTERM_WORDS, ending

TASK_LOSSES = "task_losses"
TASK_WEIGHTS = "task_weights"
#: Added to the error of a fit that failed in Lightning's sanity check, whose run_end says step 0: the failure is
#: in the validation code, and no training step ran.
SANITY_CHECK_WORDS = "in Lightning's validation sanity check, before the first training step"


def run_config(trainer: lightning.Trainer, module: lightning.LightningModule) -> dict[str, Any]:
    """What ``run_start`` records of the fit: the trainer's schedule and precision, the module's hparams."""
    return {
        "framework": f"lightning {lightning.__version__}",
        "precision": str(trainer.precision),
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "world_size": trainer.world_size,
        "hparams": dict(module.hparams),
    }


def loss_refs(losses: object) -> list[weakref.ref[torch.Tensor]]:
    """Weak references to the loss tensors ``losses`` (a module's ``task_losses``) holds now: enough to know them
    again by identity later, without keeping their graphs alive."""
    if not isinstance(losses, Mapping):
        return []
    return [weakref.ref(value) for value in losses.values() if isinstance(value, torch.Tensor)]


def fresh_losses(losses: object, earlier: list[weakref.ref[torch.Tensor]]) -> dict[str, Any]:
    """The entries of ``losses`` that are not one of the ``earlier`` tensors (those held before this batch): the
    losses set for this step. Anything that is not a tensor is passed on, for the monitor to say what is wrong."""
    if not isinstance(losses, Mapping):
        return {}
    stale = {id(tensor) for ref in earlier if (tensor := ref()) is not None}
    return {name: value for name, value in losses.items() if id(value) not in stale}


def grad_scaler(trainer: lightning.Trainer) -> torch.amp.GradScaler | None:
    """The precision plugin's GradScaler under ``16-mixed``, else None."""
    return getattr(trainer.precision_plugin, "scaler", None)


def still_scaled(
    trainer: lightning.Trainer, module: lightning.LightningModule, optimizer: torch.optim.Optimizer
) -> list[torch.Tensor]:
    """The parameters whose gradients still carry the GradScaler's scale in ``optimizer``'s
    ``on_before_optimizer_step`` under ``16-mixed``: the precision plugin unscaled ``optimizer``'s alone (empty
    without an enabled scaler)."""
    scaler = grad_scaler(trainer)
    groups = getattr(optimizer, "param_groups", None)  # (a Steppable without them: whose it unscaled is unknown)
    if scaler is None or not scaler.is_enabled() or groups is None:
        return []
    unscaled = {id(p) for group in groups for p in group["params"]}
    return [p for p in module.parameters() if p.grad is not None and id(p) not in unscaled]


#: The names a training loss is logged under, in the order they are looked for: the first one an epoch logged is
#: its record's ``train_loss`` (the others, if logged too, are metrics). ``X_epoch`` is ``X`` logged by that name
#: (Lightning's own ``X_epoch``, from ``on_step`` and ``on_epoch`` both, comes with ``X``, which is taken).
TRAIN_LOSS_NAMES = ("train_loss", "train/loss", "train_loss_epoch", "train/loss_epoch", "loss")


class StepLosses:
    """The values an epoch's batches logged under the training loss names (:data:`TRAIN_LOSS_NAMES`), summed
    where they lie (no sync per step). Logged per step only (``self.log``'s default in ``training_step``:
    ``on_step=True, on_epoch=False``), a loss's value at the epoch's end is its last batch's alone, which is
    not the epoch's loss a user reads in an epoch record: the mean of the batches' values is. ``before``: the
    metrics at the epoch's start (a value left over from an earlier epoch is not one of its batches')."""

    def __init__(self, before: Mapping[str, Any]) -> None:
        self._last: dict[str, Any] = {name: before[name] for name in TRAIN_LOSS_NAMES if name in before}
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def see(self, metrics: Mapping[str, Any]) -> None:
        """After a batch (``trainer.callback_metrics``): take each training loss it logged."""
        for name in TRAIN_LOSS_NAMES:
            value = metrics.get(name)
            if isinstance(value, torch.Tensor) and not same_value(value, self._last.get(name)):
                self._last[name] = value  # (held: its memory is not reused for a later batch's value)
                value = value.detach().float()
                self._sums[name] = self._sums[name] + value if name in self._sums else value
                self._counts[name] = self._counts.get(name, 0) + 1

    def epoch_loss(self, name: str, value: Any) -> Any:
        """The epoch's loss logged as ``name``: ``value``, what Lightning holds at the epoch's end, unless that is
        the value the epoch's last batch logged (a loss logged per step only): then the mean of every batch's."""
        if name in self._counts and same_value(value, self._last[name]):
            return self._sums[name] / self._counts[name]
        return value


def same_value(a: object, b: object) -> bool:
    """``a`` and ``b`` are the same logged value: the same tensor, or views of one tensor's memory. Lightning
    hands out a fresh ``detach()`` of a step's logged value each time its metrics are read, and makes a new tensor
    for each ``self.log``: memory tells one batch's value from the next, identity does not."""
    if a is b:
        return True
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    return a.device == b.device and a.data_ptr() == b.data_ptr() and a.shape == b.shape


def epoch_values(
    metrics: Mapping[str, Any], before: Mapping[str, Any], steps: StepLosses | None = None
) -> dict[str, Any] | None:
    """An ``epoch`` record's fields from ``trainer.callback_metrics``: ``train_loss`` from the first metric of
    :data:`TRAIN_LOSS_NAMES` logged (``train_loss``, ``train/loss``, ``train_loss_epoch``, ``train/loss_epoch``,
    ``loss``; one logged per step only is the mean of the values ``steps`` saw), every other metric under
    ``metrics``; None when no training loss was logged.

    Only what this epoch computed: Lightning keeps the last value of every metric, so a validation metric from
    an epoch without validation would be recorded as this epoch's. ``before`` holds the values at the epoch's
    start; a metric computed again is a new tensor, one left over is the same object. A metric logged both per
    step and per epoch appears as ``X``, ``X_step`` and ``X_epoch``: ``X`` (the epoch's value) alone is kept."""
    fresh = {name: value for name, value in metrics.items() if value is not before.get(name)}
    for name in list(fresh):
        stem = name.removesuffix("_step").removesuffix("_epoch")
        if stem != name and stem in metrics:
            del fresh[name]
    key = next((name for name in TRAIN_LOSS_NAMES if name in fresh), None)
    if key is None:
        return None
    loss = steps.epoch_loss(key, fresh[key]) if steps is not None else fresh[key]
    return {"train_loss": loss, "metrics": {name: value for name, value in fresh.items() if name != key}}


class GradientMonitorCallback(MonitorSettings, lightning.Callback):
    """A ``lightning.Callback`` driving the monitor from the Trainer's moments; its arguments are
    :class:`~moola.integrations.settings.MonitorSettings`'."""

    def on_fit_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        # Lightning handles SIGTERM (its SIGTERMException, SLURM requeueing; it chains a handler set before it):
        # the run ends through on_exception, never by a handler of the monitor's.
        self.monitor = self._make_monitor(end_on_sigterm=False)
        self._metrics_before: dict[str, Any] = {}
        self._step_losses = StepLosses({})
        # Manual optimization: the batch's step number (global_step + 1 as it began), whether an optimizer has
        # stepped in it yet, and, in a measured batch, the gradient each parameter held when it was measured.
        self._batch_step: int | None = None
        self._batch_stepped = False
        self._measured: dict[int, weakref.ref[torch.Tensor]] | None = None

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        # Here, not at fit start: a checkpoint's loop state (global_step) is restored in between, and run_start
        # says at which step this process began (a resumed run's tasks did not start learning there).
        self.monitor.at_step(trainer.global_step + 1)
        self.monitor.on_epoch_start(trainer.current_epoch + 1)
        self._start(trainer, pl_module)

    def _start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        """``run_start``, naming the module and the fit (nothing once written)."""
        self.monitor.on_run_start(pl_module, model_name=type(pl_module).__name__, config=run_config(trainer, pl_module))

    def on_train_epoch_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self.monitor.on_epoch_start(trainer.current_epoch + 1)
        self._metrics_before = dict(trainer.callback_metrics)
        self._step_losses = StepLosses(self._metrics_before)

    def on_train_batch_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # What task_losses holds before training_step runs is an earlier step's: remember it, to leave it out.
        self._earlier_losses = loss_refs(getattr(pl_module, TASK_LOSSES, None))
        self._batch_step = trainer.global_step + 1
        self._batch_stepped = False
        self._measured = None

    def _step(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> int:
        """The step a record made now is numbered with (1-based): ``trainer.global_step + 1``, as the batch began
        under manual optimization, where each optimizer's ``step()`` moves ``global_step`` within the batch."""
        if pl_module.automatic_optimization or self._batch_step is None:
            return trainer.global_step + 1
        return self._batch_step

    def _caught_up(self, trainer: lightning.Trainer) -> None:
        """Have the monitor count ``trainer.global_step`` steps taken, for an epoch's or run_end's record: under
        manual optimization it saw only each batch's first step."""
        self.monitor.at_step(trainer.global_step + 1)

    def on_before_backward(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, loss: torch.Tensor
    ) -> None:
        losses = fresh_losses(getattr(pl_module, TASK_LOSSES, None), getattr(self, "_earlier_losses", []))
        if losses:
            weights = getattr(pl_module, TASK_WEIGHTS, None)
            if isinstance(weights, Mapping):  # a weight for a task left out (stale) is not a mistake here
                weights = {name: weight for name, weight in weights.items() if name in losses}
            self.monitor.at_step(self._step(trainer, pl_module))
            self.monitor.on_before_backward(pl_module, losses, weights)
        # A second backward in the same batch (manual optimisation) measures only what was set after this one.
        self._earlier_losses = loss_refs(getattr(pl_module, TASK_LOSSES, None))

    def on_before_optimizer_step(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if pl_module.automatic_optimization:
            self.monitor.on_before_optimizer_step(pl_module, scaler=grad_scaler(trainer), step=trainer.global_step + 1)
        elif not self._batch_stepped:  # the batch's first step: no optimizer has stepped or zeroed its grads yet
            self._batch_stepped = True
            self._first_manual_step(trainer, pl_module, optimizer)
        elif self._measured is not None:
            self._unmeasured(pl_module, optimizer)
        if self.monitor.should_stop:  # halt_on: a callback cannot skip this step, so the fit ends after it
            trainer.should_stop = True

    def _first_manual_step(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Manual optimization: measure (if due) every gradient the batch's backward produced, at its first
        ``opt.step()``, and remember what was measured, for :meth:`_unmeasured`."""
        step = self._step(trainer, pl_module)
        self.monitor.at_step(step)
        scaled: list[torch.Tensor] = []
        if self.monitor.stats_due():  # (only then: a walk over the parameters, not one every batch)
            self._measured = {id(p): weakref.ref(p.grad) for p in pl_module.parameters() if p.grad is not None}
            scaled = still_scaled(trainer, pl_module, optimizer)
        self.monitor.on_before_optimizer_step(
            pl_module, scaler=grad_scaler(trainer), step=step, still_scaled=scaled or False
        )

    def _unmeasured(self, pl_module: lightning.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        """A later ``opt.step()`` of a measured batch: warn once if ``optimizer`` applies a gradient that was not
        there when the batch was measured (made by a backward after the first step: a GAN's discriminator).
        A new gradient is a new tensor (``zero_grad()`` sets it to None); one accumulated in place is not seen."""
        measured = self._measured or {}
        missed = {
            id(p)
            for group in getattr(optimizer, "param_groups", ())
            for p in group["params"]
            if p.grad is not None and ((ref := measured.get(id(p))) is None or ref() is not p.grad)
        }
        if missed:
            names = [name for name, p in pl_module.named_parameters() if id(p) in missed]
            shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
            self.monitor.warn_once(
                "manual: not measured",
                f"WARNING: gradient statistics: under manual optimization a batch is measured once, at its first "
                f"optimizer step; the gradients of {shown} were computed after it (a backward between two "
                "optimizer steps), so they are not measured (the records hold what they were at the first step: "
                "an earlier batch's, or none): call manual_backward for all of a batch's losses before its first "
                "opt.step() to have every gradient measured",
            )
            self._measured = None  # warned once: no more looks

    def on_train_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._step_losses.see(trainer.callback_metrics)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        values = epoch_values(trainer.callback_metrics, self._metrics_before, self._step_losses)
        self._caught_up(trainer)
        if values is not None:
            lrs = [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]
            self.monitor.on_epoch_end(trainer.current_epoch + 1, lr=lrs, **values)
        else:  # the record contract requires train_loss: say so, rather than lose every epoch's metrics unseen
            names = list(trainer.callback_metrics)
            logged = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
            self._no_epoch_record(
                trainer.current_epoch + 1,
                f"the LightningModule logged no training loss ({'it logged ' + logged if names else 'nor any metric'})",
                f"log it as {', '.join(TRAIN_LOSS_NAMES[:-1])} or {TRAIN_LOSS_NAMES[-1]}, e.g. "
                'self.log("train_loss", loss, on_epoch=True): the epoch record holds it and every other metric '
                "the epoch logged, validation ones included",
            )

    def on_fit_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self._caught_up(trainer)
        self.monitor.on_run_end("completed")

    def on_exception(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, exception: BaseException
    ) -> None:
        if self.monitor is None:
            return  # failed before fitting started: nothing was logged
        self._start(trainer, pl_module)  # failed before training did (in the sanity check): its log names the module
        self._caught_up(trainer)
        if isinstance(exception, SIGTERMException):  # Lightning's own SIGTERM handler: the job was stopped
            self.monitor.on_run_end("interrupted", error=SIGTERM_WORDS)
        else:
            status, error = ending(exception)
            if error is not None and trainer.sanity_checking:  # its run_end says step 0: say what that means
                error += f" ({SANITY_CHECK_WORDS})"
            self.monitor.on_run_end(status, error)
