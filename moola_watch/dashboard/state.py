"""What the live view remembers of a followed log and of each run in it, and the options it is drawn with.

State only, fed by :mod:`moola_watch.follow`; the views draw it and never change it.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field

from moola_watch import schema
from moola_watch.analyze import LogScan
from moola_watch.rules import run as run_rules

HISTORY = 60  # recent values kept per run for the trend sparklines
MIN_STALE_GRACE_S = 1.0  # the shortest grace a log's history gets before it can make its run stale


@dataclass
class RunView:
    """Recent values of one run, for trends (bounded, whatever the log's length)."""

    mean_norms: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    max_norms: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    first_weights: dict[str, float] | None = None  # the task loss weights the run started with
    weights: dict[str, float] | None = None  # the latest (an automatic balancer may have changed them)

    def observe(self, record: schema.Record) -> None:
        kind = record["kind"]
        if kind == schema.GRAD_STATS:
            self.mean_norms.append(record["mean_norm"])
            self.max_norms.append(record["max_norm"])
        elif kind == schema.TASK_BALANCE:
            if record.get("ratio") is not None:
                self.ratios.append(record["ratio"])
            self._weights(record.get("weights"))
        elif kind == schema.LOSS_WEIGHTS:
            self._weights(record.get("previous"))
            self._weights(record["weights"])

    def _weights(self, weights: dict[str, float] | None) -> None:
        if weights:
            self.first_weights = self.first_weights or dict(weights)
            self.weights = dict(weights)


@dataclass
class LogView:
    """A followed log: its scan (rules, counts) and the trend history of each run in it."""

    scan: LogScan
    runs: dict[str, RunView] = field(default_factory=dict)
    # Per run, how far the watcher's clock is ahead of the writer's (seconds): the latest live record's arrival
    # minus its ``time``. A trainer on another host whose clock is off is judged on its own clock, so its
    # records never look minutes old (or from the future) the moment they arrive. What the log held when it was
    # first read is history and keeps its own times (a log copied from a finished or killed run is as old as its
    # records), except a record from the future, which was written at the latest when it was read.
    clock_offsets: dict[str, float] = field(default_factory=dict)
    history_read: bool = False  # the log's first read is done: what comes now is live
    # Per run, until when (the watcher's clock) its history is not called stale: long enough for a trainer whose
    # clock is behind to show, by its next record, that it is alive (twice its longest wait between records).
    stale_grace: dict[str, float] = field(default_factory=dict)
    # Per run, the longest wait (seconds) between records: in its history by their times, then between the ones
    # that came live by when they arrived, on the watcher's clock. A writer's clock stepped an hour ahead is no
    # hour's wait (its records' times would say so, and keep a dead run from going stale for two).
    history_gaps: dict[str, float] = field(default_factory=dict)
    live_gaps: dict[str, float] = field(default_factory=dict)
    last_arrival: dict[str, float] = field(default_factory=dict)  # per run, when its latest live record came
    unreadable: str | None = None  # why it could not be read on (damaged compressed data): no more will come

    def observe(self, record: schema.Record, arrived: float) -> None:
        """Take a record read at ``arrived`` (unix seconds, the watcher's clock)."""
        run = record["run"]
        self.runs.setdefault(run, RunView()).observe(record)
        written = record["time"]
        if math.isfinite(written) and (self.history_read or written > arrived):
            self.clock_offsets[run] = arrived - written
        if self.history_read:
            if run in self.last_arrival:
                self.live_gaps[run] = max(self.live_gaps.get(run, 0.0), arrived - self.last_arrival[run])
            self.last_arrival[run] = arrived

    def end_history(self, now: float) -> None:
        """The log's first read is done at ``now`` (unix seconds): later records are live, and the run that
        wrote last gets its grace before its history can make it stale."""
        self.history_read = True
        for engine in self.scan.engines.values():
            if engine.run.run is not None:
                self.history_gaps[engine.run.run] = engine.run.longest_gap
        current = self.scan.current
        if current is not None and current.run.run is not None:
            wait = max(run_rules.STALE_GAPS * current.run.longest_gap, MIN_STALE_GRACE_S)
            self.stale_grace[current.run.run] = now + min(current.thresholds.stale_seconds, wait)

    def stale_judged(self, run: str, now: float) -> bool:
        """Whether ``run``'s silence is judged at ``now``: not in its grace, unless a record came live since."""
        return run in self.clock_offsets or now >= self.stale_grace.get(run, 0.0)

    def longest_gap(self, run: str, by_times: float) -> float | None:
        """The longest wait between ``run``'s records (seconds) once some came live: in its history, by their
        times (``by_times``, the run's longest gap as the records' times give it now, but no longer than when
        the history was read: a jump the live records took back since was none), and among the live ones by when
        they arrived. None before (the times are all there is)."""
        if run not in self.last_arrival:
            return None
        return max(min(by_times, self.history_gaps.get(run, 0.0)), self.live_gaps.get(run, 0.0))

    def writer_now(self, run: str, now: float) -> float:
        """The watcher's ``now`` (unix seconds) on ``run``'s writer's clock."""
        return now - self.clock_offsets.get(run, 0.0)


@dataclass(frozen=True)
class ViewOptions:
    top: int = 4  # layers shown at each end
    layers: re.Pattern[str] | None = None  # only layers whose name matches
    now: float = 0.0  # wall clock, unix seconds, for "last record N s ago"
