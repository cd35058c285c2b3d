"""Alerts that resolved and fired again, told once: a flapping rule must not bury the alert that decided a verdict.

Pure: a list of alerts in, the lines' worth of them out. Each episode stays in ``--json`` and the reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moola_watch.rules import RESOLVED, Alert, verdict_severity


@dataclass(frozen=True)
class Told:
    """An alert to tell, and the earlier episodes of the same rule on the same subject folded into it: resolved
    ones that counted the same in the verdict (``before`` of them, the first ``first``). The alert told is the
    latest: its figures are the ones a reader acts on (the first episode's may be far milder)."""

    alert: Alert
    before: int = 0
    first: Alert | None = None


def fold_resolved_repeats(alerts: Sequence[Alert]) -> list[Told]:
    """``alerts`` in order, the resolved episodes of one rule on one subject, at one severity and counting the same in
    the verdict, folded into the latest of them, told where the first was (an error that resolved six times is one
    line that says so). A firing alert is always told on its own."""
    told: list[Told] = []
    at: dict[tuple[str, str, str, str], int] = {}  # (rule, subject, severity, counts as) -> its line in told
    for alert in alerts:
        if alert.state != RESOLVED:
            told.append(Told(alert))
            continue
        key = (alert.rule, alert.subject, alert.severity, verdict_severity(alert))
        if key in at:
            earlier = told[at[key]]
            told[at[key]] = Told(alert, earlier.before + 1, earlier.first or earlier.alert)
        else:
            at[key] = len(told)
            told.append(Told(alert))
    return told
