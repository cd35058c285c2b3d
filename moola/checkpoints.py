"""Checkpoints taken because of what the monitor saw: the weights worth keeping when a run goes wrong.

:class:`AlertCheckpointer` is an ``on_alert`` callable for :class:`~moola.utils.monitoring.GradientMonitor`.
A collapse or critical alert saves the model and optimizer state at once (the monitor measures before the
optimizer step, so a non-finite gradient has not yet reached the weights); :meth:`AlertCheckpointer.keep`
rolls ``last-good.pt`` forward, e.g. each epoch, until the first non-finite gradient, after which it is never
overwritten.

Under torch.distributed (DDP) every rank keeps the same weights, so rank 0 alone writes: the other ranks' calls
do nothing (no file, no line, no collective: a rank never waits on another to save). A checkpoint is taken on
rank 0's alerts; an alert only another rank's batches raised saves nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from moola.utils.monitoring.console import LOGGER, PREFIX
from moola.utils.monitoring.distributed import distributed_rank
from moola_watch.rules import Alert

#: Rules whose firing saves a checkpoint (besides any critical alert).
CHECKPOINT_RULES = ("collapse",)
LAST_GOOD = "last-good.pt"


def weights_finite(model: nn.Module) -> bool:
    """True if every parameter and buffer of ``model`` is finite (one host transfer)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point() or t.is_complex()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class AlertCheckpointer:
    """Save ``model`` and ``optimizer`` state under ``directory`` on alerts, and keep the last good state."""

    def __init__(self, directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self.directory = Path(directory)
        self.model = model
        self.optimizer = optimizer
        self.nonfinite_seen = False
        self.saved: list[Path] = []

    @staticmethod
    def writes() -> bool:
        """Whether this process writes checkpoints: rank 0 (or the only process); the replicas hold the same
        weights, and every rank writing the same files raced on them."""
        return distributed_rank()[0] == 0

    def _save(self, name: str, **info: Any) -> Path | None:
        path = self.directory / name
        state = {"model": self.model.state_dict(), **info}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            torch.save(state, partial)
            partial.replace(path)  # a reader never sees half a checkpoint
        except OSError as exc:
            LOGGER.warning(f"WARNING: checkpoint {path} could not be written ({exc}); training continues")
            return None
        self.saved.append(path)
        return path

    def keep(self, step: int, epoch: int | None = None) -> None:
        """Roll ``last-good.pt`` forward, unless a non-finite gradient has been seen (or the weights are not
        finite): the last one taken before it is what a person resumes from."""
        if self.writes() and not self.nonfinite_seen and weights_finite(self.model):
            self._save(LAST_GOOD, step=step, epoch=epoch)

    def __call__(self, alert: Alert) -> None:
        """The ``on_alert`` hook: a checkpoint for a collapse or a critical alert."""
        critical = alert.severity == "critical"
        if critical:
            self.nonfinite_seen = True
        if not (critical or alert.rule in CHECKPOINT_RULES) or not self.writes():
            return
        step = alert.first_step if alert.first_step is not None else -1
        if not weights_finite(self.model):  # a bad gradient applied on a step not measured: say so, loudly
            LOGGER.warning(f"{PREFIX} Weights already non-finite at step {step} (a bad gradient was applied on a step "
                           f"the monitor did not measure): not saved; the last good weights are in "
                           f"{self.directory / LAST_GOOD}")  # fmt: skip
            return
        safe_rule = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in alert.rule)
        path = self._save(f"alert-{safe_rule}-step{step}.pt", step=step, epoch=alert.first_epoch, alert=alert.to_dict())
        if path is not None:
            LOGGER.info(f"{PREFIX} Checkpoint saved: {path} ({alert.rule}, step {step})")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written here, on the CPU (``weights_only``: nothing but tensors and plain values)."""
    return torch.load(path, map_location="cpu", weights_only=True)
