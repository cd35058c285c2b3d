"""What the rules remember about one run: its state, the balance windows, each task's losses, running stats.

The engine feeds every record to :meth:`Evidence.observe` before the rules judge it; rules only read.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from moola_watch import schema
from moola_watch.floors import task_floors
from moola_watch.rules.lifecycle import Where
from moola_watch.rules.thresholds import Thresholds
from moola_watch.rules.verdicts import (
    NO_LAYER_FLAGS,
    CollapseVerdict,
    LayerFlags,
    collapse_verdict,
    flag_layers,
    judged_layer_norms,
    names_every_weight,
    position,
)

RECENT_SAMPLES = 3  # the window's ends are each the mean of this many samples (one batch's loss is noisy)


@dataclass
class RunState:
    """What is known about the run from its records."""

    run: str | None = None
    model: str | None = None
    status: str = "running"  # running | completed | failed | interrupted (stale is an alert)
    epoch: int | None = None
    step: int | None = None
    started: float | None = None
    last_time: float | None = None
    records: int = 0
    error: str | None = None
    steps_backwards: int = 0  # records whose step went below the last seen (a restart in one file)
    # Seconds between consecutive records: the longest before the last record, and the wait for the last one,
    # kept apart because a record whose time jumped ahead of the ones after it (a clock glitch) waited for nothing.
    gap_before_last: float = 0.0
    last_gap: float = 0.0
    superseded: bool = False  # a later run started in the same log before this one wrote run_end: it ended
    continued_in: str | None = None  # another log in which the run goes on (rotated there): this file's part ended
    resumed_by: str | None = None  # a later run in its log that resumed it (same model, began past step 1)
    continues: bool = False  # this log holds the rest of a run begun in another (its run_start is "continued")
    writer: tuple[object, ...] = (None, None, None, None)  # run_start's host, pid, process and log_path, as written
    rank: int | None = None  # the rank whose own log this is (per_rank: its balance samples carry it), else None

    cadence: tuple[int | None, int | None] = (None, None)  # measured every N steps, else every N epochs (run_start)
    first_step: int | None = None  # of the first record that has one
    first_epoch: int | None = None
    began: tuple[int, int | None] | None = None  # run_start's first step and epoch: where its writer began
    config: dict[str, Any] = field(default_factory=dict)
    # run_start's task_floors: each task's training loss at the end of a run on it alone (given by the user)
    floors: dict[str, float] = field(default_factory=dict)

    @property
    def longest_gap(self) -> float:
        """The longest wait between two consecutive records so far (seconds), a clock glitch's jump aside."""
        return max(self.gap_before_last, self.last_gap)


@dataclass
class RunningStats:
    """Running mean and population std (Welford) plus a peak, of finite values."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    peak: float = -math.inf

    def add(self, value: float) -> None:
        """Count ``value`` if it is finite (a NaN or inf is left out)."""
        if math.isfinite(value):
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (value - self.mean)
            self.peak = max(self.peak, value)

    def extend(self, values: Iterable[float]) -> None:
        """:meth:`add` each of ``values``, in order: the same operations on the same floats, in locals (the offline
        path extends by runs of quiet records, 320,000 values in the benchmark's log)."""
        count, mean, m2, peak = self.count, self.mean, self.m2, self.peak
        isfinite = math.isfinite
        for value in values:
            if isfinite(value):
                count += 1
                delta = value - mean
                mean += delta / count
                m2 += delta * (value - mean)
                if value > peak:  # max(peak, value), as add keeps it
                    peak = value
        self.count, self.mean, self.m2, self.peak = count, mean, m2, peak

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else math.nan


#: A first epoch whose mean loss is above this multiple of the run's first loss diverged in it: no start.
EPOCH_BLOWUP = 2.0
#: A first epoch whose mean loss is at or below this fraction of the run's first loss held most of the learning
#: (one long epoch, a fine-tune's): no start to measure a training rate from (on the labelled runs, 1-5% of the
#: tasks of the fastest family, none of the others).
EPOCH_LEARNED = 0.5
#: A first epoch that came this fraction of the way from the first loss to the training floor held most of the
#: learning: its mean is no start to measure the rest of the way from.
EPOCH_COVERED = 0.7

#: The names of the two losses a task's progress is measured from, as the alerts' words give them.
FIRST_LOSS, FIRST_EPOCH_LOSS = "its first loss", "its first epoch's loss"


@dataclass(frozen=True)
class TaskProgress:
    """One task's own progress: its training loss at the end of the window against the window's start and
    against the run's start.

    Losses are the unweighted per-task training losses of the ``epoch`` records (``task_losses``, epoch means)
    when the run records them, else of the balance samples (``losses``, one batch each). ``earlier`` is the mean
    of the window's first ``RECENT_SAMPLES``, ``recent`` of its last; ``start`` is the task's first loss in the
    run (the first balance sample's batch, or the step-1 losses it carries: GradNorm's L(0)), ``first_epoch``
    its mean over the run's first epoch; training rates and floors are measured from the latter where it is a
    start (:attr:`rate_reference`, :meth:`floor_reference`); ``span`` says where the window lies.
    """

    task: str
    earlier: float
    recent: float
    start: float
    span: str
    per_batch: bool = False  # from the balance samples' one-batch losses (noisy), not from epoch means
    first_epoch: float | None = None  # the task's mean training loss over the run's first epoch (None: not known)

    @property
    def measure(self) -> str:
        """What the losses are, in words: 'loss' (epoch means), or 'batch loss' with how many batches each is."""
        return f"batch loss (each the mean of {RECENT_SAMPLES} batches)" if self.per_batch else "loss"

    @property
    def change(self) -> float:
        """Fractional change of the loss over the window (-0.3: down 30%)."""
        return self.recent / self.earlier - 1.0

    def floor_reference(self, floor: float) -> tuple[float | None, str]:
        """The loss a training ``floor`` is measured from, and its name: the run's first epoch's mean where it
        recorded one, else the run's first loss (None where unknown). A floor is an epoch mean (a run on the task
        alone); the first batch's loss is the untrained network's and holds an offset every model loses in its
        first updates (a regression's mean, a classifier's prior), so a task that learned only that read as
        partway to its floor: measured on the labelled runs (tuning, floor_progress 0.35), healthy runs given an
        error fell from 12 to 4 of 263. The first loss stays the reference where the first epoch's mean is no
        start: above :data:`EPOCH_BLOWUP` times the first loss (it diverged in that epoch), or already
        :data:`EPOCH_COVERED` of the way from the first loss to the floor (an epoch long enough to hold most of
        the learning leaves a gap to the floor too small to judge from; on the labelled runs, epoch 1 came at
        most 63% of the way)."""
        first, epoch = self.start, self._epoch_start
        if epoch is None or (first > floor and (first - epoch) / (first - floor) > EPOCH_COVERED):
            return first, FIRST_LOSS
        return epoch, FIRST_EPOCH_LOSS

    @property
    def rate_reference(self) -> tuple[float | None, str]:
        """The loss a training rate is taken against, and its name: the run's first epoch's mean where it recorded
        one, else the run's first loss (None where unknown). The first batch is one batch of the untrained network:
        noisy (a task's later epochs measured 114% of it on a healthy run) and holding an offset every model loses
        in its first updates; against its first epoch, held out, healthy runs given an error fell from 72 to 42 of
        396 (the thresholds re-chosen for each). The first loss stays the reference where the first epoch's mean is
        no start: above :data:`EPOCH_BLOWUP` times it (a blow-up) or at most :data:`EPOCH_LEARNED` of it (that
        epoch held most of the learning)."""
        first, epoch = self.start, self._epoch_start
        if epoch is None or epoch <= EPOCH_LEARNED * first:
            return first, FIRST_LOSS
        return epoch, FIRST_EPOCH_LOSS

    @property
    def _epoch_start(self) -> float | None:
        """The first epoch's mean where both it and the first loss are known and that epoch did not diverge
        (above :data:`EPOCH_BLOWUP` times the first loss): what each reference may start from."""
        first, epoch = self.start, self.first_epoch
        return None if first is None or epoch is None or epoch > EPOCH_BLOWUP * first else epoch

    @property
    def rate(self) -> float | None:
        """The loss now over :attr:`rate_reference` (GradNorm's training rate; 0.2: down to a fifth); None when
        the run's start is unknown."""
        reference, _name = self.rate_reference
        return None if reference is None else self.recent / reference


def usable_losses(losses: Mapping[str, float]) -> dict[str, float]:
    """The per-task losses a training rate can be taken from: finite and above 0."""
    return {task: loss for task, loss in losses.items() if math.isfinite(loss) and loss > 0}


class LossSeries:
    """The last ``window`` per-task training losses from one kind of record, and where each was taken."""

    def __init__(self, window: int, *, per_batch: bool = False) -> None:
        self.per_batch = per_batch
        self.samples: deque[dict[str, float]] = deque(maxlen=max(window, 2 * RECENT_SAMPLES))
        self.where: deque[str] = deque(maxlen=self.samples.maxlen)

    def add(self, losses: Mapping[str, float], where: Where) -> None:
        usable = usable_losses(losses)
        if len(usable) >= 2:
            self.samples.append(usable)
            self.where.append(position(where.epoch, where.step))

    def ready(self) -> bool:
        return len(self.samples) >= 2 * RECENT_SAMPLES

    def progress(self, start: Mapping[str, float], first_epoch: Mapping[str, float]) -> dict[str, TaskProgress]:
        """Each task's change over the window, or {} with fewer than ``2 * RECENT_SAMPLES`` samples; ``start``
        holds each task's first loss of the run (a task without one has no training rate), ``first_epoch`` its
        mean loss over the run's first epoch."""
        if not self.ready():
            return {}
        first, last = list(self.samples)[:RECENT_SAMPLES], list(self.samples)[-RECENT_SAMPLES:]
        span = f"{self.where[0]} to {self.where[-1]}"
        return {
            task: TaskProgress(
                task,
                earlier=_mean(s[task] for s in first),
                recent=_mean(s[task] for s in last),
                start=start.get(task),
                span=span,
                per_batch=self.per_batch,
                first_epoch=first_epoch.get(task),
            )
            for task in self.samples[-1]
            if all(task in s for s in (*first, *last))
        }


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return math.fsum(items) / len(items)


class Predecessor(NamedTuple):
    """The run before this one in its log, when it did not complete (same model): its first losses, its first
    epoch's losses and where it got to. A run that begins late within reach of it resumed from its checkpoint."""

    first_losses: Mapping[str, float] = {}
    first_epoch_losses: Mapping[str, float] = {}
    step: int | None = None
    epoch: int | None = None


class QuietGradStats(NamedTuple):
    """Consecutive ``grad_stats`` records of one run in which no rule finds its condition (every layer norm
    finite and inside the band, nothing non-finite counted, the mean norm's level healthy), column by column:
    all the evidence keeps of such records. ``record(i)`` decodes the i-th in full, only when asked."""

    run: str
    steps: Sequence[int | None]
    epochs: Sequence[int | None]
    times: Sequence[float]
    mean_norms: Sequence[float]
    max_norms: Sequence[float]
    record: Callable[[int], schema.Record]


def _cadence(start: schema.Record) -> tuple[int | None, int | None]:
    """How often a run measures, from its ``run_start``: every N optimizer steps (the least of its step
    frequencies), else every N epochs; None where not recorded."""

    def least(*names: str) -> int | None:
        values = [value for name in names if type(value := start.get(name)) is int and value > 0]
        return min(values, default=None)

    return least("every_n_steps", "balance_every_n_steps"), least("log_frequency", "task_balance_frequency")


def measured_nothing(norm: float, loss: float | None, weight: float | None) -> bool:
    """Whether a task was not in a balance sample, given its gradient norm there, its loss and its weight: a norm
    that is not finite (a step the scaler skips), a loss that is not finite (a batch without the task's labels:
    a mean over none), or no gradient with nothing to have one from: a loss of 0 (a masked loss over no labels)
    or a weight of 0 (the task switched off, as in a warm-up). A task with a loss and a weight whose gradient
    on the shared parameters is 0 did take part: nothing of it reached them."""
    if not math.isfinite(norm) or (loss is not None and not math.isfinite(loss)):
        return True
    return norm == 0 and (loss == 0 or weight == 0)


class Evidence:
    """The memory of one run that the rules read. Windows hold the last ``thresholds.window`` balance samples."""

    def __init__(self, thresholds: Thresholds, floors: Mapping[str, float] | None = None) -> None:
        self.thresholds = thresholds
        self.given_floors = dict(floors or {})  # a flag's or config's training floors: they beat run_start's
        self.run = RunState()
        window = thresholds.window
        self.ratios: deque[float] = deque(maxlen=window)  # pointer/type, NaN ratios left out
        self.dominance: dict[str, deque[float]] = {}  # per task: largest task's weighted norm / its own
        self.largest: deque[str] = deque(maxlen=window)  # which task's weighted norm was the largest, per sample
        self.balance_steps: deque[int | None] = deque(maxlen=window)  # the steps of the window's samples
        self.weights: dict[str, float] = {}  # the loss weights of the latest balance sample
        self.shares: dict[str, deque[float]] = {}  # per task: its share of the update, over the window
        self.run_shares: dict[str, RunningStats] = {}  # per task: its share of the update, over the whole run
        # per task: the cosine of its gradient with the sample before's, over the window (NaN where not recorded)
        self.persistence: dict[str, deque[float]] = {}
        self.last_measured: dict[str, Where] = {}  # per task: its latest balance sample
        self.absent_at: int | None = None  # the step of the latest balance sample, if a task measured nothing in it
        self.left_out_since: dict[str, Where] = {}  # tasks measured once, left out of the balance since then
        # every task a balance record held a norm of, measured or absent (NaN), with how many records held it
        self.sampled_tasks: Counter[str] = Counter()
        self.left_out_tasks: set[str] = set()  # every task a balance record left out (no gradient on shared layers)
        self.balance_records = 0  # task_balance records, usable or not
        self.epoch_losses = LossSeries(window)
        self.batch_losses = LossSeries(window, per_batch=True)
        self.first_losses: dict[str, float] = {}  # each task's first usable training loss in the run
        # each task's training loss over the run's first epoch (None: no epoch record yet; {}: none known)
        self.first_epoch_losses: dict[str, float] | None = None
        # Why the run's first losses are not its start (None: they are): it began late, or was read from its middle.
        self.start_unknown: str | None = None
        # The run before it in its log, if it did not complete (same model): where this one may have resumed from.
        self.resumes = Predecessor()
        self._start_judged = False
        self.balance_samples = 0
        self._window: tuple[int, Thresholds, CollapseVerdict] | None = None  # the last window_verdict, and of what
        self.grad_samples = 0
        self.mean_norms = RunningStats()
        self.max_norms = RunningStats()
        self.nonfinite_samples = 0
        self.amp_overflows = 0  # measurements whose non-finite gradients were a GradScaler overflow
        self.layer_flags: LayerFlags = NO_LAYER_FLAGS  # of the latest grad_stats record, judged once for every rule
        self.nonfinite: tuple[int, bool] = (0, False)  # its non-finite layer count, and whether a scaler overflow
        self._last_grad_stats: schema.Record | Callable[[], schema.Record] | None = None  # or how to decode it
        self.last_balance: schema.Record | None = None
        self.last_epoch: schema.Record | None = None

    @property
    def floors(self) -> dict[str, float]:
        """The training floors this run is judged by (task -> its loss at the end of a run on it alone): those
        recorded in run_start, those given to the watcher beating them."""
        return self.run.floors | self.given_floors

    def floor(self, task: str) -> float | None:
        """The task's training floor (:attr:`floors`), or None."""
        return self.floors.get(task)

    def observe(self, record: schema.Record, where: Where, *, quiet: bool = False) -> None:
        """Remember what ``record`` adds (before the rules judge it). ``quiet``: a ``grad_stats`` record known to
        have every layer norm finite and inside the band (its layers need no flagging)."""
        self.run.records += 1
        self._at(where)
        kind = record["kind"]
        if kind == schema.GRAD_STATS:  # the most frequent kind first
            self._grad_stats(record, quiet)
        elif kind == schema.RUN_START:
            self.run.run, self.run.model, self.run.started = record["run"], record["model"], record["time"]
            self.run.continues = record.get(schema.CONTINUED) is True
            self.run.writer = tuple(record.get(name) for name in ("host", "pid", "process", "log_path"))
            self.run.cadence = _cadence(record)
            if type(first_step := record.get("first_step")) is int:
                first_epoch = record.get("first_epoch")
                self.run.began = (first_step, first_epoch if type(first_epoch) is int else None)
            self.run.config = record.get("config") or {}
            self.run.floors = task_floors(record.get("task_floors"))
        elif kind == schema.TASK_BALANCE:
            self._balance(record, where)
        elif kind == schema.EPOCH:
            self.last_epoch = record
            losses = record.get("task_losses") or {}
            self._losses(self.epoch_losses, losses, where)
            if self.first_epoch_losses is None:  # the run's first epoch, whatever its number (a loop may count from 0)
                self.first_epoch_losses = usable_losses(losses)
        elif kind == schema.RUN_END:
            self.run.status, self.run.error = record["status"], record.get("error")
        if self.run.run is None:
            self.run.run = record["run"]

    @property
    def last_grad_stats(self) -> schema.Record | None:
        if callable(self._last_grad_stats):
            self._last_grad_stats = self._last_grad_stats()
        return self._last_grad_stats

    def observe_quiet(self, quiet: QuietGradStats, start: int = 0) -> None:
        """Remember ``quiet``'s records from ``start`` on, as :meth:`observe` would one by one."""
        steps, epochs, times = quiet.steps[start:], quiet.epochs[start:], quiet.times[start:]
        if not steps:
            return
        self.run.records += len(steps)
        self._advance(steps, epochs, times)
        self.grad_samples += len(steps)
        self.mean_norms.extend(quiet.mean_norms[start:])
        self.max_norms.extend(quiet.max_norms[start:])
        self.layer_flags = NO_LAYER_FLAGS
        self.nonfinite = (0, False)
        last = len(quiet.steps) - 1
        self._last_grad_stats = lambda: quiet.record(last)
        if self.run.run is None:
            self.run.run = quiet.run

    def _advance(
        self, steps: Sequence[int | None], epochs: Sequence[int | None], times: Sequence[float | None]
    ) -> None:
        """The run's position after records at these steps, epochs and times, in order (None: not recorded)."""
        run = self.run
        # _step and _time for each record, in locals (their comparisons, in their order)
        last, first, backwards = run.step, run.first_step, run.steps_backwards
        for step in steps:
            if step is not None:
                if last is not None and step < last:
                    backwards += 1
                elif first is None:
                    first = step
                last = step
        run.step, run.first_step, run.steps_backwards = last, first, backwards
        run.epoch = next((epoch for epoch in reversed(epochs) if epoch is not None), run.epoch)
        if run.first_epoch is None:
            run.first_epoch = next((epoch for epoch in epochs if epoch is not None), None)
        latest, before, last = run.last_time, run.gap_before_last, run.last_gap
        for time in times:  # what _time does for each, in its order
            if time is None or not -math.inf < time < math.inf:
                continue
            if latest is not None:
                if time < latest:
                    last = 0.0
                else:
                    if last > before:
                        before = last
                    last = time - latest
            latest = time
        run.last_time, run.gap_before_last, run.last_gap = latest, before, last

    def _at(self, where: Where) -> None:
        """The run's position after one record taken at ``where`` (what :meth:`_advance` does for many)."""
        self._step(where.step)
        if where.epoch is not None:
            self.run.epoch = where.epoch
            if self.run.first_epoch is None:
                self.run.first_epoch = where.epoch
        if where.time is not None:
            self._time(where.time)

    def _step(self, step: int | None) -> None:
        """A record at optimizer step ``step`` (None: not recorded); a step below the last is counted."""
        run = self.run
        if step is not None:
            if run.step is not None and step < run.step:
                run.steps_backwards += 1
            elif run.first_step is None:
                run.first_step = step
            run.step = step

    def _time(self, time: float) -> None:
        """A record written at ``time`` (unix seconds; not a finite number: ignored). The run was last heard from
        at the last record's time, not the largest: one record from an hour ahead (a clock glitch) must not keep
        a dead run fresh for an hour. The wait for it counts among the run's gaps once time goes on from it; a
        record earlier than the one before takes that wait back (it was the jump, not a wait)."""
        run = self.run
        if not math.isfinite(time):
            return
        if run.last_time is not None:
            if time < run.last_time:
                run.last_gap = 0.0
            else:
                run.gap_before_last = max(run.gap_before_last, run.last_gap)
                run.last_gap = time - run.last_time
        run.last_time = time

    def _grad_stats(self, record: schema.Record, quiet: bool) -> None:
        self._last_grad_stats = record
        self.grad_samples += 1
        self.mean_norms.add(record["mean_norm"])
        self.max_norms.add(record["max_norm"])
        if quiet:
            self.layer_flags, self.nonfinite = NO_LAYER_FLAGS, (0, False)
            return
        norms = judged_layer_norms(record)
        flags = flag_layers(norms, self.thresholds, complete=names_every_weight(record))
        if flags.vanishing and self.absent_at is not None and self.absent_at == record.get("step"):
            # A task sat this step out (its balance sample says so): layers with no gradient at all are its head's,
            # idle, not vanishing. A layer with a tiny gradient, or any layer on a step every task took part in,
            # still is.
            flags = replace(flags, vanishing=tuple(name for name in flags.vanishing if norms[name] != 0.0))
        self.layer_flags = flags
        self.nonfinite = count, overflow = nonfinite_count(record, len(flags.nonfinite))
        if overflow:
            self.amp_overflows += 1
        elif count:
            self.nonfinite_samples += 1

    def _balance(self, record: schema.Record, where: Where) -> None:
        """A balance sample counts when it measured something: a non-NaN pointer/type ratio, or for other task
        sets a largest task norm above zero."""
        self.last_balance = record
        self.balance_records += 1
        if type(rank := record.get("rank")) is int:  # each rank's own batches: an alert on them is that rank's
            self.run.rank = rank
        ratio: float | None = record.get("ratio")
        norms: dict[str, float] = record["norms"]
        left_out = record.get("left_out") or ()
        self.sampled_tasks.update(norms.keys())
        self.left_out_tasks.update(left_out)
        counted = False
        losses: Mapping[str, float] = record.get("losses") or {}
        weights: Mapping[str, float] = record.get("weights") or {}
        absent = {task for task, norm in norms.items() if measured_nothing(norm, losses.get(task), weights.get(task))}
        # A pointer/type ratio with either task switched off (weight 0) compares a task with nothing: 0 or inf.
        # A batch without a task's labels (loss 0) stays a sample: the spec's ratio has no notion of it.
        switched_off = any(weights.get(task) == 0 for task in ("pointer", "type"))
        if ratio is not None and not math.isnan(ratio) and not switched_off:
            self.ratios.append(ratio)
            counted = True
        measured = {task: norm for task, norm in norms.items() if task not in absent}
        self._left_out(left_out, measured, where)
        self.absent_at = where.step if absent else None
        largest = max(measured.values(), default=math.nan)
        if (ratio is None or len(norms) > 2) and largest > 0:
            for task, norm in measured.items():
                window = self.dominance.setdefault(task, deque(maxlen=self.thresholds.window))
                window.append(largest / norm if norm > 0 else math.inf)
            self.largest.append(max(measured, key=measured.__getitem__))
            counted = True
        if not counted:
            return
        self.balance_samples += 1
        self.balance_steps.append(where.step)
        self.weights = dict(record.get("weights") or {})
        persistence: Mapping[str, float] = record.get("persistence") or {}
        for task, share in (record.get("shares") or {}).items():
            if task not in absent:
                self.shares.setdefault(task, deque(maxlen=self.thresholds.window)).append(share)
                self.run_shares.setdefault(task, RunningStats()).add(share)
                window = self.persistence.setdefault(task, deque(maxlen=self.thresholds.window))
                window.append(persistence.get(task, math.nan))
        self._start_losses(record)
        self._losses(self.batch_losses, {t: loss for t, loss in losses.items() if t not in absent}, where)

    def _start_losses(self, record: schema.Record) -> None:
        """A first balance record taken after the run's first step carries that step's losses (``start_losses``):
        taken at step 1, they are the run's start, whatever came between."""
        start: Mapping[str, float] = record.get("start_losses") or {}
        if not start or record.get("start_step") != 1 or self._start_judged:
            return
        self._start_judged = True  # the start is known: no later first losses are taken for it
        for task, loss in start.items():
            if math.isfinite(loss) and loss > 0:
                self.first_losses.setdefault(task, loss)

    def _left_out(self, left_out: Iterable[str], measured: Mapping[str, float], where: Where) -> None:
        """A task measured before and left out of this sample (no gradient on the shared parameters) stopped
        training them: remember since when, and forget its windows, which describe a balance it is no longer in."""
        for task in left_out:
            if task in self.last_measured and task not in self.left_out_since:
                self.left_out_since[task] = where
                self.dominance.pop(task, None)
                self.shares.pop(task, None)
                self.persistence.pop(task, None)
        for task in measured:
            self.last_measured[task] = where
            self.left_out_since.pop(task, None)

    def steady_dominant(self) -> str | None:
        """The task whose weighted gradient was the largest in every sample of the full window, or None (the
        window is not full, or the lead changed hands)."""
        if len(self.largest) < self.thresholds.window or len(set(self.largest)) != 1:
            return None
        return self.largest[0]

    def window_verdict(self, th: Thresholds) -> CollapseVerdict:
        """The pointer/type window's verdict under ``th``: :func:`collapse_verdict` of ``ratios``. The imbalance and
        collapse rules both ask after every balance sample, and the summary at the end: it is judged once per
        sample (``ratios`` changes only with ``balance_samples``)."""
        window = self._window
        if window is None or window[0] != self.balance_samples or window[1] is not th:
            window = self._window = (self.balance_samples, th, collapse_verdict(self.ratios, th))
        return window[2]

    def _losses(self, series: LossSeries, losses: Mapping[str, float], where: Where) -> None:
        series.add(losses, where)
        if not self._start_judged:
            self._judge_start()
        if self.start_unknown is not None:
            return  # these are not the run's first losses: a training rate from them would call a learned task new
        for task, loss in losses.items():
            if task not in self.first_losses and math.isfinite(loss) and loss > 0:
                self.first_losses[task] = loss

    def _judge_start(self) -> None:
        """Once, at the run's first losses: are they its start? Not when its writer began past the first step
        or epoch (``run_start`` says where it began), or, in a log that does not say, when its first record came
        later than its cadence allows a fresh run's first measurement (it resumed from a checkpoint, or was read
        from its middle); unless the run before it in its log, of the same model, did not complete and got at
        least to where this one begins: a run resumed from that run's checkpoint, appending to its log."""
        self._start_judged = True
        run = self.run
        steps, epochs = run.cadence
        losses, epoch_losses, got_to_step, got_to_epoch = self.resumes
        if steps is not None and run.first_step is not None:
            late = run.first_step > steps + 1
            resumes = bool(losses) and got_to_step is not None and run.first_step <= got_to_step + steps + 1
        elif epochs is not None and run.first_epoch is not None:
            late = run.first_epoch > epochs + 1
            resumes = bool(losses) and got_to_epoch is not None and run.first_epoch <= got_to_epoch + epochs + 1
        else:
            late = resumes = False
        if run.began is not None:  # the writer knew: a task whose losses join late is no resumed run
            began_step, began_epoch = run.began
            late = began_step > 1 or (began_epoch is not None and began_epoch > 1)
        if late:  # this run's first epoch record is none of its start's: the one it resumed has it, or nothing
            self.first_epoch_losses = dict(epoch_losses) if resumes else {}
        if late and resumes:
            self.first_losses.update(losses)
        elif late and self.start_unknown is None:
            where = (f"it began at {position(run.began[1], run.began[0])}" if run.began
                     else f"its first records are from {position(run.first_epoch, run.first_step)}")  # fmt: skip
            self.start_unknown = f"{where}, past its start (resumed from a checkpoint?)"

    def progress(self) -> dict[str, TaskProgress]:
        """Every task's own progress over the window: from the epoch records' losses once there are enough,
        else from the balance samples' batch losses; {} while neither has enough."""
        series = self.epoch_losses if self.epoch_losses.ready() else self.batch_losses
        return series.progress(self.first_losses, self.first_epoch_losses or {})

    def mean_share(self, task: str) -> float | None:
        """The task's mean share of the update over the window (None when not recorded)."""
        window = [share for share in self.shares.get(task, ()) if math.isfinite(share)]
        return math.fsum(window) / len(window) if window else None

    def mean_persistence(self, task: str) -> float | None:
        """The task's mean cosine between consecutive gradients over the window (None when never recorded: logs
        of older writers, a representation's balance)."""
        window = [value for value in self.persistence.get(task, ()) if math.isfinite(value)]
        return math.fsum(window) / len(window) if window else None

    def window_span(self) -> str:
        """'steps 40-130' for the window's balance samples, or '' when their steps are unknown."""
        steps = [step for step in self.balance_steps if step is not None]
        return f"steps {steps[0]}-{steps[-1]}" if steps else ""


def nonfinite_count(record: schema.Record, named: int) -> tuple[int, bool]:
    """Non-finite layers of a ``grad_stats`` record whose ``layer_norms`` hold ``named`` non-finite norms, and
    whether they were a GradScaler overflow (the scaler skips the step and lowers the scale: not a model fault)."""
    count = max(named, len(record.get("nonfinite_layers") or ()), record["nonfinite_count"])
    amp = record.get("amp") or {}
    return count, bool(count) and amp.get("overflow") is True
