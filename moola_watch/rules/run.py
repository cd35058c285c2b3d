"""Rules on the run itself: a non-finite training loss, how the run ended, a run whose writer died without
saying so, a run gone quiet (stale), and a run that never measured its gradients."""

from __future__ import annotations

import math

from moola_watch import schema
from moola_watch.counts import counted
from moola_watch.durations import human_duration
from moola_watch.rules.evidence import Evidence, RunState
from moola_watch.rules.lifecycle import Observation
from moola_watch.rules.rule import Findings, Rule, never
from moola_watch.rules.thresholds import Thresholds
from moola_watch.rules.verdicts import position

NONFINITE = "nonfinite"
STALE = "stale"
RUN_FAILED = "run_failed"
RUN_INTERRUPTED = "run_interrupted"
RUN_DIED = "run_died"
GRADS_UNMEASURED = "grads_unmeasured"


def _loss(_ev: Evidence, record: schema.Record, _th: Thresholds) -> Findings:
    loss = record["train_loss"]
    if math.isfinite(loss):
        return [("loss", None)]
    return [("loss", Observation(
        "critical", loss, f"Training loss is {loss} at {position(record.get('epoch'), record.get('step'))}",
        "Lower the learning rate, clip gradients, check inputs and labels for NaN",
    ))]  # fmt: skip


def _failed(ev: Evidence, record: schema.Record, _th: Thresholds) -> Findings:
    if record["status"] != "failed":
        return []
    return [("run", Observation("error", None, f"Run failed: {ev.run.error or 'no error message'}",
                                "Read the error; fix and restart the run"))]  # fmt: skip


def resumed_failure(state: RunState) -> Observation:
    """The failure of a run that a later run in its log resumed from a checkpoint (``resumed_by``): a warning
    that says so, settling the error (the training went on; the resuming run's verdict is the training's)."""
    return Observation(
        "warning", None,
        f"Run failed and was resumed by run {state.resumed_by}; its error: {state.error or 'no error message'}",
        "The training went on in that run; if the error comes back, read it and fix it", settles=True,
    )  # fmt: skip


def _interrupted(_ev: Evidence, record: schema.Record, _th: Thresholds) -> Findings:
    if record["status"] != "interrupted":
        return []
    return [("run", Observation("warning", None, "Run interrupted before completion", "Resume or rerun training"))]


def _any_record(_ev: Evidence, _record: schema.Record, _th: Thresholds) -> Findings:
    return [("run", None)]  # a record arrived: the run is not stale


#: A run is stale after this many times the longest wait for a record it has shown, if that is beyond
#: ``stale_seconds``: a run that measures every ten minutes is not hung after five.
STALE_GAPS = 2.0


def stale_after(run: RunState, th: Thresholds, longest_gap: float | None = None) -> float:
    """Seconds without a record after which the run is stale: ``stale_seconds``, or ``STALE_GAPS`` times the
    longest wait between two of its records so far (``longest_gap``, seconds, where the caller knows it better
    than the records' times: by when they arrived), whichever is longer."""
    return max(th.stale_seconds, STALE_GAPS * (run.longest_gap if longest_gap is None else longest_gap))


def stale_observation(
    run: RunState, now: float, th: Thresholds, longest_gap: float | None = None
) -> Observation | None:
    """The stale condition at wall-clock ``now`` (unix seconds), or None while the run is fresh or ended (with
    a run_end, or superseded by a later run in its log); ``longest_gap`` as :func:`stale_after` takes it."""
    gap = run.longest_gap if longest_gap is None else longest_gap
    if (
        run.status != "running"
        or run.superseded
        or run.continued_in
        or run.last_time is None
        or now - run.last_time <= stale_after(run, th, gap)
    ):
        return None
    age = now - run.last_time
    cadence = (f"; its records came at most {human_duration(gap)} apart"
               if STALE_GAPS * gap > th.stale_seconds else "")  # fmt: skip
    return Observation(
        "warning", age,
        f"No record for {human_duration(age)} and no run_end (last at {position(run.epoch, run.step)}){cadence}",
        "Check the training process: it may have crashed, hung or been killed",
    )  # fmt: skip


def died_observation(run: RunState) -> Observation:
    """The run's writer has exited without a ``run_end`` (the watcher saw it: :mod:`moola_watch.writer_process`).
    What writes none is the OOM killer, ``kill -9``, a preempted job, a crash in native code, and a Python
    exception in a loop that gave the monitor no chance to record it (no ``with monitor:``; the framework
    callbacks record theirs): the log cannot tell which."""
    host, pid = run.writer[:2]
    return Observation(
        "error", None,
        f"The trainer (pid {pid} on {host}) exited without a run_end: killed (the OOM killer, kill -9, a preempted "
        "job), crashed outside Python, or ended by an exception that no `with monitor:` recorded",
        "Find why in the trainer's output (a traceback), the kernel log (dmesg: 'Killed process') or the "
        "scheduler's; resume from the last checkpoint",
    )  # fmt: skip


def _gradients_never_measured(ev: Evidence, _record: schema.Record, _th: Thresholds) -> Findings:
    """At ``run_end``: a run that measured its task balance but never its gradients. The gradient rules judged
    nothing, and without this the run would pass as healthy on its balance alone. (A run that measured neither is
    ``no_measurements``, by the engine; the rest of a rotated run may have its gradients in the part before.)"""
    if ev.grad_samples or not ev.balance_records or ev.run.continues:
        return []
    last = f"; the run recorded {position(ev.run.epoch, ev.run.step)} last" if ev.run.step is not None else ""
    return [("gradients", Observation(
        "warning", None,
        f"No gradient statistics in this run ({counted(ev.balance_records, 'task balance sample')}{last}): "
        "non-finite, exploding and vanishing gradients were never looked for",
        "Call the monitor's on_before_optimizer_step(model) after backward() and before optimizer.step() (called "
        "after zero_grad() it finds no gradient, and the trainer warns so); a run shorter than every_n_steps has "
        "no sample",
    ))]  # fmt: skip


STALE_RULE = Rule(STALE, "warning", False, frozenset(schema.KINDS), _any_record,
                  "no record for `stale_seconds` (or twice the run's longest wait for one, if longer) while the run "
                  "has not ended (judged on the clock)",
                  never)  # fmt: skip
DIED_RULE = Rule(RUN_DIED, "error", False, frozenset(schema.KINDS), _any_record,
                 "the process writing the run exited without a run_end (seen by a watcher on its host, in its "
                 "PID namespace: the run_start records which process it is); resolved, a warning, when a later "
                 "run in its log goes on from it",
                 never, outcome=True)  # fmt: skip
FAILED_RULE = Rule(RUN_FAILED, "error", False, frozenset({schema.RUN_END}), _failed,
                   "the run ended with status failed (a warning once a later run in its log resumed it from a "
                   "checkpoint)",
                   outcome=True)  # fmt: skip
RULES = (
    STALE_RULE,
    DIED_RULE,
    Rule(NONFINITE, "critical", False, frozenset({schema.EPOCH}), _loss, "a non-finite training loss"),
    FAILED_RULE,
    Rule(RUN_INTERRUPTED, "warning", False, frozenset({schema.RUN_END}), _interrupted, "the run was interrupted"),
    Rule(GRADS_UNMEASURED, "warning", False, frozenset({schema.RUN_END}), _gradients_never_measured,
         "a run that recorded task balance samples ended without a gradient statistics sample"),
)  # fmt: skip
