"""The engine: records in, alert events out, for one run. Every record updates the run's evidence, then each
rule that judges that kind of record says per subject whether its condition holds, and the one lifecycle
turns that into pending / firing / resolved alerts.

Offline, ``grad_stats`` records come in batches: :func:`quiet_grad_stats` asks every rule that judges them
where its condition may hold, and :meth:`RuleEngine.observe_quiet` takes the others in bulk. The monitor asks
the same of each record it writes, through the :class:`GradSummary` it hands :meth:`RuleEngine.observe`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from moola_watch import schema
from moola_watch.counts import counted
from moola_watch.rules import balance, gradients, run
from moola_watch.rules.columns import GradColumns, GradSummary
from moola_watch.rules.evidence import Evidence, QuietGradStats, RunState
from moola_watch.rules.lifecycle import (
    FIRING,
    PENDING,
    RESOLVED,
    SEVERITY_RANK,
    Alert,
    AlertEvent,
    Lifecycle,
    Observation,
    Where,
)
from moola_watch.rules.rule import Rule, Vectorised, never
from moola_watch.rules.thresholds import Thresholds
from moola_watch.rules.verdicts import CollapseVerdict, mean_ratio

#: Every rule, in the order they judge a record.
RULES: tuple[Rule, ...] = (*run.RULES, *gradients.RULES, *balance.RULES)
_BY_KIND: dict[str, tuple[Rule, ...]] = {kind: tuple(r for r in RULES if kind in r.kinds) for kind in schema.KINDS}
_GRAD_RULE_NAMES = frozenset(rule.name for rule in _BY_KIND[schema.GRAD_STATS])
_OUTCOME_RULES = frozenset(rule.name for rule in RULES if rule.outcome)
#: The ``vectorised`` conditions of the rules that judge ``grad_stats`` and that a record can show, each once (two
#: rules may share one); None if one of those rules declares none (then every record must be observed).
_GRAD_CONDITIONS: tuple[Vectorised, ...] | None = (
    tuple(dict.fromkeys(rule.vectorised for rule in _BY_KIND[schema.GRAD_STATS] if rule.vectorised is not never))
    if all(rule.vectorised is not None for rule in _BY_KIND[schema.GRAD_STATS])
    else None
)


def quiet_grad_stats(columns: GradColumns, thresholds: Thresholds) -> np.ndarray | None:
    """Per record of the batch: True where no rule that judges ``grad_stats`` can find its condition (by their
    ``vectorised`` conditions); None if one of those rules declares none (then every record must be observed)."""
    if _GRAD_CONDITIONS is None:
        return None
    return ~np.logical_or.reduce([condition(columns, thresholds) for condition in _GRAD_CONDITIONS])


@dataclass(frozen=True)
class MonitoringSummary:
    """End-of-run summary, the same object for the trainer's console and the watcher."""

    grad_samples: int
    mean_norm: float | None
    mean_norm_std: float | None
    max_norm: float | None
    max_norm_peak: float | None
    nonfinite_samples: int
    amp_overflows: int
    balance_samples: int
    balance: CollapseVerdict
    collapse_first_epoch: int | None  # epoch where a collapse alert first fired, if one ever did
    worst_severity: str | None  # the worst severity any alert reached, None if none fired
    alerts_fired: int

    def lines(self) -> list[str]:
        """The spec's summary block, line by line."""
        out = ["[PHASE 4] Gradient Monitoring Summary:"]
        if self.grad_samples:
            out.append(f"  Mean gradient norm: {self.mean_norm:.4f} ± {self.mean_norm_std:.4f}")
            out.append(f"  Max gradient norm: {self.max_norm:.4f} (peak: {self.max_norm_peak:.4f})")
        else:
            out.append("  Mean gradient norm: n/a (no finite gradient statistics)")
        if self.nonfinite_samples:
            out.append(f"  Non-finite gradients in {counted(self.nonfinite_samples, 'measurement')}")
        if self.amp_overflows:
            out.append(f"  GradScaler overflow (step skipped) in {counted(self.amp_overflows, 'measurement')}")
        if self.balance.collapsed:
            out.append(f"  TASK COLLAPSE DETECTED: {self.balance.text}")
        else:
            line = f"  Task balance: {self.balance.text}"
            if self.collapse_first_epoch is not None:
                line += f" (task collapse was detected at epoch {self.collapse_first_epoch}, since resolved)"
            out.append(line)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict_severity(alert: Alert) -> str:
    """The severity ``alert`` gives its run's verdict: the worst it reached, except that an alert of an
    ``outcome`` rule that resolved (a starved task that recovered) counts as a warning."""
    if alert.rule in _OUTCOME_RULES and alert.state == RESOLVED:
        return "warning"
    return alert.severity


def _told(lifecycle: Lifecycle, rule: str, subject: str, seen: Observation) -> bool:
    """An alert of ``rule`` on ``subject`` is open at ``seen``'s severity or worse: at the run's end, its words
    (how the condition came about, and where) stay; the end's own judgement only raises the severity."""
    alert = lifecycle.open.get((rule, subject))
    return alert is not None and SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[seen.severity]


class RuleEngine:
    """Feed one run's records with :meth:`observe` (and the clock with :meth:`check_stale`); get alert events."""

    def __init__(self, thresholds: Thresholds | None = None, floors: Mapping[str, float] | None = None) -> None:
        """``floors``: training floors (task -> loss) given to the watcher; they beat the run's recorded ones."""
        self.thresholds = thresholds or Thresholds()
        self.evidence = Evidence(self.thresholds, floors)
        self.lifecycle = Lifecycle()

    @property
    def run(self) -> RunState:
        return self.evidence.run

    @property
    def alerts(self) -> list[Alert]:
        """Every alert ever raised, in order, pending ones included."""
        return self.lifecycle.alerts

    @property
    def last_grad_stats(self) -> schema.Record | None:
        return self.evidence.last_grad_stats

    @property
    def last_balance(self) -> schema.Record | None:
        return self.evidence.last_balance

    @property
    def last_epoch(self) -> schema.Record | None:
        return self.evidence.last_epoch

    def observe(self, record: schema.Record, summary: GradSummary | None = None) -> list[AlertEvent]:
        """Apply the rules to one decoded record; return the alert transitions it caused.

        ``summary``: a ``grad_stats`` record's :class:`GradSummary`, computed by the caller from the very norms
        the record holds (the monitor has it from its statistics). When no rule's condition may hold in it and
        no alert of those rules is open, the record only updates the evidence, as :meth:`observe_quiet` does."""
        where = Where(record.get("step"), record.get("epoch"), record.get("time"))
        evidence, thresholds, lifecycle = self.evidence, self.thresholds, self.lifecycle
        if summary is not None and self._quiet(summary):
            evidence.observe(record, where, quiet=True)
            return []
        evidence.observe(record, where)
        events: list[AlertEvent] = []
        for rule in _BY_KIND[record["kind"]]:
            for subject, seen in rule.evaluate(evidence, record, thresholds):
                if seen is not None and record["kind"] == schema.RUN_END and _told(lifecycle, rule.name, subject, seen):
                    continue
                if seen is not None or (rule.name, subject) in lifecycle.open:  # else the lifecycle has nothing to do
                    events += lifecycle.apply(rule.name, subject, seen, where, rule.confirm(thresholds))
        return events

    def _quiet(self, summary: GradSummary) -> bool:
        """No gradient rule can find its condition in a record so summarised, nor has an alert to resolve."""
        open_alerts = self.lifecycle.open
        if _GRAD_CONDITIONS is None or (open_alerts and any(rule in _GRAD_RULE_NAMES for rule, _ in open_alerts)):
            return False
        for condition in _GRAD_CONDITIONS:  # noqa: SIM110 (no generator: this runs on every step of a run)
            if condition(summary, self.thresholds):
                return False
        return True

    def observe_quiet(self, quiet: QuietGradStats) -> list[AlertEvent]:
        """Take grad_stats records in which :func:`quiet_grad_stats` found no condition: what :meth:`observe`
        would do one by one. Only while an alert of a rule that judges them is open does a record need the
        lifecycle (it resolves the alert, or drops it if pending): those go through :meth:`observe`."""
        events: list[AlertEvent] = []
        start = 0
        while start < len(quiet.steps) and any(rule in _GRAD_RULE_NAMES for rule, _subject in self.lifecycle.open):
            events += self.observe(quiet.record(start))
            start += 1
        self.evidence.observe_quiet(quiet, start)
        return events

    def check_stale(self, now: float, longest_gap: float | None = None) -> list[AlertEvent]:
        """Fire or resolve the stale alert given the wall clock ``now`` (unix seconds) and, where the caller saw
        the records arrive, the longest wait between them (seconds; else the records' times say it)."""
        state = self.run
        if state.status != "running" or state.superseded or state.continued_in or state.last_time is None:
            return []
        if (run.RUN_DIED, "run") in self.lifecycle.open:  # it has ended: its silence says nothing more
            return []
        seen = run.stale_observation(state, now, self.thresholds, longest_gap)
        return self.lifecycle.apply(run.STALE, "run", seen, Where(state.step, state.epoch, now))

    def check_writer(self, gone: bool | None, now: float) -> list[AlertEvent]:
        """Fire the run_died alert when the process writing this run has exited (``gone``, as the caller found
        with :func:`moola_watch.writer_process.writer_gone`) and the run has not ended; resolve it once a later
        run in its log (or its continuation in another) shows the training went on. ``now``: unix seconds."""
        state, died = self.run, (run.RUN_DIED, "run") in self.lifecycle.open
        where = Where(state.step, state.epoch, now)
        if died and (state.superseded or state.continued_in):  # a later run (or file) goes on from it: resolved
            return self.lifecycle.apply(run.RUN_DIED, "run", None, where)
        if gone is not True or died or state.status != "running" or state.superseded or state.continued_in:
            return []
        return self.lifecycle.apply(run.RUN_DIED, "run", run.died_observation(state), where)

    def check_resumed(self, now: float) -> list[AlertEvent]:
        """Once a later run in its log resumed the run from a checkpoint (``resumed_by``): its run_interrupted
        resolves (its advice, resume, was taken), and its run_failed error settles into a warning that says it
        failed and which run resumed it (the failure still shows; the training's verdict is the resuming run's).
        ``now``: unix seconds."""
        state, lifecycle = self.run, self.lifecycle
        if state.resumed_by is None:
            return []
        where = Where(state.step, state.epoch, now)
        events: list[AlertEvent] = []
        if (run.RUN_INTERRUPTED, "run") in lifecycle.open:
            events += lifecycle.apply(run.RUN_INTERRUPTED, "run", None, where)
        failed = lifecycle.open.get((run.RUN_FAILED, "run"))
        if failed is not None and failed.severity == "error":
            events += lifecycle.apply(run.RUN_FAILED, "run", run.resumed_failure(state), where)
        return events

    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.state == FIRING]

    @property
    def run_status(self) -> str:
        """running, stale, completed, failed or interrupted; dead for a run whose writer exited without a
        run_end; unterminated for a run that wrote no run_end before a later run started in its log (one process
        writes a log at a time: it ended, unrecorded)."""
        if self.run.status == "running" and self.run.superseded:
            return "unterminated"
        if self.run.status == "running" and self.run.continued_in:
            return "continued"
        if self.run.status == "running" and (run.RUN_DIED, "run") in self.lifecycle.open:
            return "dead"
        stale = self.lifecycle.open.get((run.STALE, "run"))
        if self.run.status == "running" and stale is not None and stale.state == FIRING:
            return "stale"
        return self.run.status

    def most_dominated(self) -> tuple[str, float] | None:
        """For a task set other than pointer/type, the task the others dominate most over a full window and that
        window's mean ratio (the largest task gradient over its own); None for pointer/type or without a full
        window."""
        th, ev = self.thresholds, self.evidence
        if ev.ratios:
            return None
        full = {task: mean_ratio(w) for task, w in ev.dominance.items() if len(w) == th.window}
        return max(full.items(), key=lambda item: item[1]) if full else None

    def balance(self) -> CollapseVerdict:
        """The pointer/type window verdict; for other task sets, the most dominated task's."""
        th, ev = self.thresholds, self.evidence
        if ev.ratios or not ev.dominance:
            return ev.window_verdict(th)
        dominated = self.most_dominated()
        if dominated is None:
            samples = max(len(w) for w in ev.dominance.values())
            return CollapseVerdict("not_enough_data", None, samples, "Not enough data")
        task, worst = dominated
        if worst > th.collapse_high:
            return CollapseVerdict(
                "dominated", worst, th.window, f"{task} task dominated (ratio={worst:.2f} > {th.collapse_high})"
            )
        if worst > th.balance_high:  # the pointer/type window's "imbalanced", for any tasks
            return CollapseVerdict(
                "imbalanced", worst, th.window,
                f"Tasks imbalanced (largest/smallest gradient ratio={worst:.2f}, healthy up to {th.balance_high})",
            )  # fmt: skip
        return CollapseVerdict(
            "balanced", worst, th.window, f"Tasks balanced (largest/smallest gradient ratio={worst:.2f})"
        )

    def worst_severity(self) -> str | None:
        """The worst severity any alert that fired gives the run's verdict (:func:`verdict_severity`)."""
        seen = [verdict_severity(a) for a in self.alerts if a.state != PENDING]
        return max(seen, key=SEVERITY_RANK.__getitem__) if seen else None

    def measured(self) -> bool:
        """Did the run measure its gradients (statistics or task balance)? Epoch records alone carry losses
        and metrics, but no rule of a gradient monitor judged anything."""
        ev = self.evidence
        return bool(ev.grad_samples or ev.last_balance)

    def summary(self) -> MonitoringSummary:
        ev = self.evidence
        collapse_epochs = [a.first_epoch for a in self.alerts if a.rule == balance.COLLAPSE and a.state != PENDING]
        fired = [a for a in self.alerts if a.state != PENDING]
        has_norms = ev.mean_norms.count > 0
        return MonitoringSummary(
            grad_samples=ev.mean_norms.count,
            mean_norm=ev.mean_norms.mean if has_norms else None,
            mean_norm_std=ev.mean_norms.std if has_norms else None,
            max_norm=ev.max_norms.mean if has_norms else None,
            max_norm_peak=ev.max_norms.peak if has_norms else None,
            nonfinite_samples=ev.nonfinite_samples,
            amp_overflows=ev.amp_overflows,
            balance_samples=ev.balance_samples,
            balance=self.balance(),
            collapse_first_epoch=collapse_epochs[0] if collapse_epochs else None,
            worst_severity=self.worst_severity(),
            alerts_fired=len(fired),
        )


def replay(records: Iterable[schema.Record], thresholds: Thresholds | None = None) -> RuleEngine:
    """Run every record through a fresh engine and return it (for offline use and tests)."""
    engine = RuleEngine(thresholds)
    for record in records:
        engine.observe(record)
    return engine
