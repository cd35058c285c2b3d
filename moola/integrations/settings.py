"""What both framework callbacks take: the log, the step frequencies and any other
:class:`~moola.utils.monitoring.GradientMonitor` option. The monitor itself is made when training starts, after
the framework has set up its process group, so that under DDP only rank 0 writes."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

from moola.utils.monitoring.monitor import GradientMonitor


class MonitorSettings:
    """Gradient statistics every ``every_n_steps`` optimizer steps and task balance every
    ``balance_every_n_steps`` (default the same), appended to ``log_path``; ``monitor_options`` go to
    :class:`~moola.utils.monitoring.GradientMonitor` (``thresholds``, ``run_id``, ``per_rank``, ...)."""

    def __init__(
        self,
        log_path: str | Path | None = None,
        *,
        every_n_steps: int = 50,
        balance_every_n_steps: int | None = None,
        **monitor_options: Any,
    ) -> None:
        _check_options(type(self).__name__, monitor_options)
        self._make_monitor = functools.partial(
            GradientMonitor,
            log_path=log_path,
            every_n_steps=every_n_steps,
            balance_every_n_steps=balance_every_n_steps,
            end_at_exit=False,  # the callback ends its runs itself, and knows how a run that raised ended
            **monitor_options,
        )
        self.monitor: GradientMonitor | None = None

    def _no_epoch_record(self, epoch: int, why: str, fix: str) -> None:
        """Say once (every epoch is alike; quiet on ranks that do not write) that epoch ``epoch`` has no ``epoch``
        record, ``why`` and how to ``fix`` it: the record contract requires a ``train_loss``, so an epoch without
        one loses its other metrics (validation ones included) too."""
        if self.monitor is not None:
            self.monitor.warn_once("no epoch loss", f"WARNING: epoch {epoch}: {why}, so it has no epoch record ({fix})")


#: What a callback sets on the monitor itself: given again in its options, it would be a duplicate argument.
CALLBACK_SETS = {"end_at_exit": "the callback ends its runs itself (failed with the exception that stopped one)"}


def _check_options(callback: str, options: dict[str, Any]) -> None:
    """Refuse, when the callback is made, an option the monitor does not take or the callback sets itself: the
    monitor is only made when training starts, and a misspelt option must not wait for that to fail."""
    for name in options:
        if name in CALLBACK_SETS:
            raise TypeError(f"{callback}: {name} is not an option here: {CALLBACK_SETS[name]}")
    known = set(inspect.signature(GradientMonitor).parameters) - {"log_path", "every_n_steps", "balance_every_n_steps"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"{callback}: GradientMonitor has no option {', '.join(map(repr, unknown))} "
                        f"(it takes {', '.join(sorted(known - set(CALLBACK_SETS)))})")  # fmt: skip
