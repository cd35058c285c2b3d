"""The one alert lifecycle, Prometheus' pending -> firing -> resolved, keyed by (rule, subject).

A condition seen once is *pending*; it *fires* once it has held for the rule's confirmation count of
consecutive samples (1: at once); it is *resolved* when a later sample no longer shows it. A pending alert
whose condition goes away is dropped silently. One condition is one alert however many records show it;
an alert whose severity rises while firing is re-announced (escalated). Severity never falls while the
condition holds, and the alert keeps the words (value, message, recommendation) of its latest observation at
that severity, so what it says always justifies its severity; unless a milder observation *settles* it (what
made it worse is over, not merely unseen in one sample): then the worse alert resolves and a milder one opens
in its place, as Prometheus resolves an error rule's alert while a warning rule's goes on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from moola_watch import schema

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
SEVERITY_RANK = {name: rank for rank, name in enumerate(schema.SEVERITIES)}


@dataclass
class Alert:
    """One condition over its life. ``value`` is the latest measurement that showed it at its severity."""

    rule: str
    subject: str
    severity: str
    state: str
    value: float | None
    message: str
    recommendation: str
    first_step: int | None
    first_epoch: int | None
    first_time: float | None
    last_step: int | None = None
    last_epoch: int | None = None
    resolved_step: int | None = None
    resolved_epoch: int | None = None
    samples: int = 1  # consecutive samples that showed the condition
    layers: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AlertEvent:
    """A transition: ``alert`` is a snapshot taken when it entered ``alert.state``."""

    alert: Alert
    escalated: bool = False  # re-announced because its severity rose while firing


class Where(NamedTuple):  # a NamedTuple: made once per record, and cheaper than a dataclass
    """Where a sample was taken: optimizer step, epoch (either may be None) and unix time."""

    step: int | None
    epoch: int | None
    time: float | None


@dataclass(frozen=True)
class Observation:
    """A condition as one sample shows it: its severity, the measured value and the words."""

    severity: str
    value: float | None
    message: str
    recommendation: str
    layers: tuple[str, ...] = ()
    settles: bool = False  # a worse alert of this condition is over (see the module's docstring)


class Lifecycle:
    """Every alert of one run: ``alerts`` in the order raised (pending ones included), open ones by key."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.open: dict[tuple[str, str], Alert] = {}

    def apply(
        self, rule: str, subject: str, seen: Observation | None, where: Where, confirm: int = 1
    ) -> list[AlertEvent]:
        """Advance the (rule, subject) alert by one sample: ``seen`` is the condition, or None if absent;
        ``confirm`` is how many consecutive samples it needs to fire."""
        key = (rule, subject)
        alert = self.open.get(key)
        if seen is None:
            if alert is None:
                return []
            del self.open[key]
            if alert.state == PENDING:
                self.alerts.remove(alert)
                return []
            alert.state = RESOLVED
            alert.resolved_step, alert.resolved_epoch = where.step, where.epoch
            return [_snapshot(alert)]
        if alert is not None and seen.settles and SEVERITY_RANK[seen.severity] < SEVERITY_RANK[alert.severity]:
            return self.apply(rule, subject, None, where) + self.apply(rule, subject, seen, where, confirm)
        escalated = False
        if alert is None:
            alert = Alert(
                rule=rule,
                subject=subject,
                severity=seen.severity,
                state=PENDING,
                value=seen.value,
                message=seen.message,
                recommendation=seen.recommendation,
                first_step=where.step,
                first_epoch=where.epoch,
                first_time=where.time,
                samples=0,
            )
            self.open[key] = alert
            self.alerts.append(alert)
        elif SEVERITY_RANK[seen.severity] > SEVERITY_RANK[alert.severity]:
            alert.severity = seen.severity
            escalated = alert.state == FIRING
        before = alert.state
        alert.samples += 1
        alert.last_step, alert.last_epoch = where.step, where.epoch
        if SEVERITY_RANK[seen.severity] == SEVERITY_RANK[alert.severity]:  # milder evidence keeps the worst words
            alert.value, alert.message, alert.recommendation = seen.value, seen.message, seen.recommendation
            alert.layers = list(seen.layers)
        if alert.samples >= confirm:
            alert.state = FIRING
        if alert.state != before or escalated or alert.samples == 1:
            return [_snapshot(alert, escalated)]
        return []


def _snapshot(alert: Alert, escalated: bool = False) -> AlertEvent:
    return AlertEvent(replace(alert, layers=list(alert.layers)), escalated=escalated)
