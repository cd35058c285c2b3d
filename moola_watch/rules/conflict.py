"""Gradient conflict: a task that ended a completed run no better than it began while its gradient on the shared
parameters opposed another task's. Not a starvation (it may get a fair share of the update: the share rules
stay silent), but the same outcome: the task did not learn, because the tasks pull the shared layers apart.
The cosines are the balance samples' ``cosines`` (one per pair of tasks, ``a|b``)."""

from __future__ import annotations

import math

from moola_watch import schema
from moola_watch.rules.evidence import Evidence
from moola_watch.rules.lifecycle import Observation
from moola_watch.rules.rule import Findings, Rule
from moola_watch.rules.thresholds import Thresholds

CONFLICT = "conflict"
#: A task whose training loss ended at least this fraction of its first did not learn at all.
UNLEARNED_RATE = 1.0
#: A window mean cosine at or below this between two tasks' gradients: they oppose each other.
OPPOSED_COSINE = -0.3
#: Cosines a pair needs in its window before it is judged.
MIN_COSINES = 3


def opposed_partners(ev: Evidence, task: str) -> list[tuple[str, float]]:
    """The tasks whose gradient opposed ``task``'s over the window (mean cosine at or below
    ``OPPOSED_COSINE``), with that mean, the most opposed first."""
    partners = []
    for (first, second), window in ev.cosines.items():
        if task in (first, second) and len(window) >= MIN_COSINES:
            mean = math.fsum(window) / len(window)
            if mean <= OPPOSED_COSINE:
                partners.append((second if first == task else first, mean))
    return sorted(partners, key=lambda partner: partner[1])


def _unlearned_in_conflict(ev: Evidence, record: schema.Record, _th: Thresholds) -> Findings:
    """At a completed run's ``run_end``: each task whose training loss ended at ``UNLEARNED_RATE`` of its first or
    above while another task's gradient opposed its own."""
    if record["status"] != "completed" or not ev.cosines:
        return []
    findings: list[tuple[str, Observation | None]] = []
    for task, own in ev.progress().items():
        rate = own.rate
        partners = opposed_partners(ev, task)
        if rate is None or rate < UNLEARNED_RATE or not partners:
            continue
        other, cosine = partners[0]
        samples = len(ev.cosines[(task, other) if (task, other) in ev.cosines else (other, task)])
        findings.append((task, Observation(
            "warning", cosine,
            f"TASK NOT LEARNING: the run ended with the {task} task's training loss at {rate:.0%} of its first "
            f"({own.start:.3g} -> {own.recent:.3g}) while its gradient on the shared parameters opposed the "
            f"{other} task's (cosine {cosine:.2f}, the mean of the last {samples} balance samples): the two pull "
            "the shared layers apart",
            f"Lower the {other} loss weight, give the tasks more shared capacity, or resolve the conflict "
            "(project one gradient off the other: PCGrad)",
        )))  # fmt: skip
    return findings


RULES = (
    Rule(CONFLICT, "warning", False, frozenset({schema.RUN_END}), _unlearned_in_conflict,
         f"a completed run ended with a task's training loss no lower than its first while another task's "
         f"gradient opposed its own (window mean cosine <= {OPPOSED_COSINE})", outcome=True),
)  # fmt: skip
