"""Halting a run on an alert (``GradientMonitor(halt_on=...)``): the first alert at or above ``halt_on`` stops
the run before the optimizer applies the gradient that raised it, and under torch.distributed every rank stops
at the same step (a rank that went on would block in the next all-reduce). The decision only: the loop reads
:attr:`Halting.should_stop`, the monitor writes why into ``run_end``."""

from __future__ import annotations

from collections.abc import Callable

from moola.utils.monitoring.distributed import halted_anywhere
from moola_watch.rules import Alert

#: Severities a run can be halted on, lowest first ("warning" only ranks below them).
HALT_SEVERITIES = ("warning", "error", "critical")


class Halting:
    """Whether, and why, a run halts: on its own alerts (:meth:`consider`) or another rank's (:meth:`agree`)."""

    def __init__(self, halt_on: str) -> None:
        if halt_on not in HALT_SEVERITIES:
            raise ValueError(f"halt_on must be one of {', '.join(HALT_SEVERITIES)}, got {halt_on!r}")
        self.halt_on = halt_on
        self.halted_by: Alert | None = None  # the first alert at or above halt_on: the loop should stop
        # Under torch.distributed, why another rank halted (its alerts come from its own batches).
        self.halted_elsewhere: str | None = None
        self._agreed = False  # the ranks found one of them halted: no more agreement is needed

    @property
    def should_stop(self) -> bool:
        return self.halted_by is not None or self.halted_elsewhere is not None

    def consider(self, alert: Alert) -> bool:
        """Take a firing alert; True if it halts the run (the first at or above ``halt_on``)."""
        rank = HALT_SEVERITIES.index(alert.severity if alert.severity in HALT_SEVERITIES else "warning")
        if self.halted_by is not None or rank < HALT_SEVERITIES.index(self.halt_on):
            return False
        self.halted_by = alert
        return True

    def reason(self, rank: int, world_size: int) -> str | None:
        """Why the run halts, in words (the alert, the step it halted at, and with several processes the rank
        it was seen on), or None while it goes on."""
        alert = self.halted_by
        if alert is None:
            return self.halted_elsewhere
        where = f" on rank {rank}" if world_size > 1 else ""
        return (f"halted on {alert.severity} alert {alert.rule} ({alert.subject}) at step {alert.last_step}{where}: "
                f"{alert.message}")  # fmt: skip

    def agree(self, rank: int, world_size: int, warn: Callable[[str], None]) -> None:
        """Under torch.distributed, one small all-reduce: if any rank halted, every rank learns why and stops at
        this step (with one process, or once agreed, nothing). A collective: every rank calls it at the same
        point of each step. A broken process group is one ``warn`` and each rank deciding alone."""
        if world_size < 2 or self._agreed:
            return
        try:
            halted = halted_anywhere(self.reason(rank, world_size) if self.halted_by is not None else None)
        except Exception as exc:
            warn(f"WARNING: the ranks could not agree on halting ({exc})")
            return
        self._agreed = halted is not None
        if halted is not None and self.halted_by is None:
            self.halted_elsewhere = halted
