"""What a monitored run puts out: its JSONL records, judged by the rule engine as they are written, and what it
tells: console lines, warnings (each once), and alerts, as records and to the user's ``on_alert`` and halting.

Under torch.distributed every rank measures (sharded norms need every rank in the reduction), but only rank 0
writes and prints, its gradients being the all-reduced ones; ``per_rank=True`` gives each rank its own file,
named and marked with the rank. Writing problems are one warning and never interrupt training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from moola.utils.monitoring.console import LOGGER, PREFIX
from moola.utils.monitoring.distributed import distributed_rank, launcher_rank, rank_log_path, shared_run_id
from moola.utils.monitoring.halting import Halting
from moola.utils.monitoring.jsonl_writer import JsonlRecordWriter
from moola_watch import rules, schema
from moola_watch.rules import Alert, AlertEvent, GradSummary

_OPTIONAL_INT = (int, type(None))


def _quiet(_text: str) -> None:
    """Where a rank other than 0 sends its console lines."""


class RunOutput:
    """The records of run ``run_id`` and what they tell, for one monitor. Unless ``run_id_given``, each rank's
    own log (``per_rank``) names rank 0's run id: one job is one run, whichever rank's file a watcher reads.

    ``target`` is a log path or an open binary stream (None: no log), opened at the run's first record
    (:meth:`open`). ``echo`` and ``warn`` take the console lines and warnings (default: the ``moola`` logger at
    INFO and WARNING; warnings go to ``echo`` when only that is given); with ``silent`` (a disabled monitor)
    nothing is written or said. ``start_run`` writes the run's ``run_start``: every log opens with it, whatever
    record came first. Each alert that starts firing goes to ``on_alert`` (an exception in it is one warning),
    then to ``halting``."""

    def __init__(
        self,
        target: str | Path | BinaryIO | None,
        *,
        run_id: str,
        run_id_given: bool,
        engine: rules.RuleEngine,
        clock: Callable[[], float],
        echo: Callable[[str], None] | None,
        warn: Callable[[str], None] | None,
        per_rank: bool,
        silent: bool,
        on_alert: Callable[[Alert], None] | None,
        halting: Halting | None,
        start_run: Callable[[], object],
    ) -> None:
        self.rank, self.world_size = distributed_rank()
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            self.rank = launcher_rank()  # made before the process group: the launcher says who writes
        self.per_rank = per_rank
        self.echo = echo or LOGGER.info
        self._warn = warn or echo or LOGGER.warning
        if silent or (self.rank != 0 and not per_rank):
            target = None
            self.echo = self._warn = _quiet
        # Opened at the run's first record (:meth:`open`): by then a process group made after the monitor
        # (torch.multiprocessing.spawn sets no RANK) says which process writes.
        self.target = target
        self.run_id = run_id
        self.run_id_given = run_id_given  # a made-up one is rank 0's on every rank of a per-rank job (open)
        self.engine = engine
        self._clock = clock
        self._on_alert = on_alert
        self._halting = halting
        self._start_run = start_run
        self.writer: JsonlRecordWriter | None = None
        self.started = False  # the run's run_start is written (or being written): :meth:`open` was called
        self.ended = False  # its run_end is written (or being written): its alerts halt nothing
        self._last_step = 0  # the highest step recorded so far
        self.last_epoch: int | None = None  # the epoch of the latest record (run_end's, not the one after it)
        self._warned: set[str] = set()

    @property
    def log_path(self) -> Path | None:
        """The log file (each rank's own with ``per_rank``); None for a stream or no log."""
        if self.writer is not None:
            return self.writer.path
        target = self.target
        return self._rank_path(Path(target)) if isinstance(target, str | Path) else None

    @property
    def records_written(self) -> int:
        """Records appended to the log so far (0 without a writer)."""
        return self.writer.records_written if self.writer is not None else 0

    def open(self) -> None:
        """Open the log for the run's first record (from then on :attr:`started`). A process group set up since
        the monitor was made says which process this is (halting must agree across it): only rank 0 writes, or
        each its own file."""
        self.started = True
        rank, world_size = distributed_rank()
        if world_size > 1:
            self.rank, self.world_size = rank, world_size
        target = self.target
        if target is None:
            return
        if self.rank != 0 and not self.per_rank:
            self.target, self.echo, self._warn = None, _quiet, _quiet
            return
        if self.per_rank and self.world_size > 1 and not self.run_id_given:
            self.run_id, problem = shared_run_id(self.run_id, self.rank)
            if problem:
                self.warn_once("run id", f"WARNING: {problem}: its log names the run {self.run_id}")
        self.writer = JsonlRecordWriter(
            self._rank_path(Path(target)) if isinstance(target, str | Path) else target, warn=self._warn
        )

    def _rank_path(self, path: Path) -> Path:
        return rank_log_path(path, self.rank) if self.per_rank else path

    def close(self) -> None:
        """Sync the log to disk and release it."""
        if self.writer:
            self.writer.close(sync=True)

    def console_on(self) -> bool:
        """False when nobody would see a console line (the logger's default), so none is built."""
        return self.echo is not _quiet and (self.echo != LOGGER.info or LOGGER.isEnabledFor(logging.INFO))

    def warn_once(self, key: str, message: str) -> None:
        """Give ``message`` through the warning channel, the first time ``key`` is seen."""
        if key not in self._warned:
            self._warned.add(key)
            self._warn(message)

    def emit(self, kind: str, fields: dict[str, Any]) -> None:
        """Write a record of ``kind`` from ``fields`` that come from the user: cleaned first (an optional value no
        reader would accept is left out, with one warning; without a usable required one, nothing is written)."""
        fields, problems = schema.clean_fields(kind, fields)
        for problem in problems:
            self.warn_once(problem, f"WARNING: {problem} in {'an' if kind[0] in 'aeiou' else 'a'} {kind} record")
        if any("(left out)" not in problem for problem in problems):
            return  # a required field is unusable: a record no reader would accept is not written
        self._write(kind, fields)

    def emit_built(
        self, kind: str, fields: dict[str, Any], *, finite: bool, summary: GradSummary | None = None
    ) -> None:
        """Write a record of ``kind`` whose fields the monitor built itself from known types (floats from a
        tensor's ``tolist()``, parameter names, counts): only the values a user passes in (the epoch and the
        step) are checked, not every field, and with ``finite`` (every float in ``fields`` is finite) the line is
        encoded as it stands. ``summary`` goes to the rule engine with the record. A test holds the watcher's
        validators to accepting every record built here."""
        if not (type(fields["epoch"]) in _OPTIONAL_INT and type(fields["step"]) is int):
            self.emit(kind, fields)  # a user's epoch or step of another type: clean field by field
        else:
            self._write(kind, fields, finite=finite, summary=summary)

    def _write(
        self, kind: str, fields: dict[str, Any], *, finite: bool = False, summary: GradSummary | None = None
    ) -> None:
        """Judge and write a record from valid ``fields``; ``finite`` and ``summary``: see :meth:`emit_built`."""
        if kind != schema.RUN_START and not self.started:
            self._start_run()  # every log opens with its run_start (thresholds included), whatever came first
        self.last_epoch = fields.get("epoch", self.last_epoch)
        step = fields.get("step")
        if step is not None:  # a step never goes back: run_end's comes after a probe of a step not yet taken
            fields["step"] = self._last_step = max(step, self._last_step)
        if self.per_rank:
            fields["rank"] = self.rank
        now = self._clock()
        record = schema.record_of(kind, self.run_id, now, fields)
        try:
            events = self.engine.observe(record, summary)
        except Exception as exc:  # a defect in a rule must not end the training it watches; the record is kept
            events = []
            self.warn_once("rules", f"WARNING: moola's rules failed on a {kind} record ({type(exc).__name__}: {exc}); "
                                    "records are still written but live alerts may be missing: judge the log with "
                                    "`moola-watch check`")  # fmt: skip
        if self.writer:
            native = finite and type(now) is float and math.isfinite(now)
            try:
                line = schema.encode_native(record) if native else schema.encode_record(record)
            except (TypeError, ValueError) as exc:  # a value no encoder takes: that record, never the run
                self.warn_once(f"encode {kind}", f"WARNING: a {kind} record could not be written ({exc})")
            else:
                self.writer.write_line(line, kind)
                if kind == schema.RUN_START:  # a rotated log's new file opens with it, marked as going on
                    self.writer.header = schema.encode_record({**record, schema.CONTINUED: True})
        if events:
            self._report(events, record)

    def _report(self, events: list[AlertEvent], cause: schema.Record) -> None:
        for event in events:
            alert = event.alert
            if alert.state == rules.PENDING:
                continue
            if self.writer and cause["kind"] != schema.RUN_END:  # run_end is the last record and says it all
                self.writer.write(
                    schema.make_record(
                        schema.ALERT,
                        self.run_id,
                        self._clock(),
                        epoch=cause.get("epoch"),
                        step=cause.get("step"),
                        rule=alert.rule,
                        severity=alert.severity,
                        state=alert.state,
                        subject=alert.subject,
                        value=alert.value,
                        message=alert.message,
                        recommendation=alert.recommendation,
                    )
                )
            if alert.state == rules.FIRING:
                self._act_on(alert)
            if alert.rule == rules.IMBALANCE:
                continue  # the per-sample balance line already says it, in the spec's words
            if alert.state == rules.FIRING:
                self.echo(f"{PREFIX} {alert.message}\n  Recommendation: {alert.recommendation}")
            else:
                self.echo(f"{PREFIX} Resolved ({alert.rule}): {alert.message}")

    def _act_on(self, alert: Alert) -> None:
        """The user's ``on_alert``, then the halt decision (so a checkpoint is taken before the loop stops)."""
        if self._on_alert is not None:
            try:
                self._on_alert(alert)
            except Exception as exc:  # a broken callback must not take training down
                self.warn_once("on_alert", f"WARNING: on_alert raised {type(exc).__name__}: {exc}; training continues")
        # (run_end's own alerts, a run that failed, are its end, not a reason to stop it)
        if self._halting is not None and not self.ended and self._halting.consider(alert):
            self.echo(f"{PREFIX} Halting: {alert.severity} alert {alert.rule} ({alert.subject})")
