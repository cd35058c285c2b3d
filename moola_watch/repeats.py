"""Alerts that resolved and fired again, told once: a flapping rule must not bury the alert that decided a verdict.

Pure: a list of alerts in, the lines' worth of them out. Each episode stays in ``--json`` and the reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moola_watch.rules import RESOLVED, Alert, verdict_severity


@dataclass(frozen=True)
class Told:
    """An alert to tell, and the later episodes of the same rule on the same subject folded into it: resolved ones
    that counted the same in the verdict (``again``), the last of them ``last``."""

    alert: Alert
    again: int = 0
    last: Alert | None = None


def fold_resolved_repeats(alerts: Sequence[Alert]) -> list[Told]:
    """``alerts`` in order, each resolved one followed by later resolved episodes of its rule and subject, at its
    severity and counting the same in the verdict, folded into the first of them (an error that resolved six
    times is one line that says so). A firing alert is always told on its own."""
    told: list[Told] = []
    first: dict[tuple[str, str, str, str], int] = {}  # (rule, subject, severity, counts as) -> its line in told
    for alert in alerts:
        if alert.state != RESOLVED:
            told.append(Told(alert))
            continue
        key = (alert.rule, alert.subject, alert.severity, verdict_severity(alert))
        if key in first:
            at = first[key]
            told[at] = Told(told[at].alert, told[at].again + 1, alert)
        else:
            first[key] = len(told)
            told.append(Told(alert))
    return told
