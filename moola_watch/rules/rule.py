"""A rule as a small declared object: its name, the worst severity it raises, how many samples confirm it,
which records it judges, its evaluation, and (for ``grad_stats`` rules) the same condition over columns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from moola_watch import schema
from moola_watch.rules.columns import GradColumns, GradSummary
from moola_watch.rules.evidence import Evidence
from moola_watch.rules.lifecycle import Observation
from moola_watch.rules.thresholds import Thresholds

#: (subject, the condition as this record shows it, or None where it is absent) for each subject judged.
Findings = Iterable[tuple[str, Observation | None]]
Evaluate = Callable[[Evidence, schema.Record, Thresholds], Findings]
#: Over a batch of records: True where a record may show the condition, one entry per record; over one record's
#: summary, whether it may (the conditions are written with operators that do both).
Vectorised = Callable[[GradColumns | GradSummary, Thresholds], np.ndarray | bool]


def never(cols: GradColumns | GradSummary, _th: Thresholds) -> np.ndarray | bool:
    """The condition of a rule no record shows (the stale rule: the clock judges it)."""
    return np.zeros(len(cols), bool) if isinstance(cols, GradColumns) else False


@dataclass(frozen=True)
class Rule:
    """One rule. ``evaluate`` reads the run's evidence (already updated with the record) and the record, and
    says per subject whether the condition holds; the engine runs the result through the lifecycle.

    ``severity`` is the worst it raises (an observation may be milder, e.g. norm level's warning band);
    ``confirmed`` rules wait ``Thresholds.confirm`` consecutive samples before firing, the others fire at once.

    ``outcome`` rules judge how the run ends: an alert of theirs that resolved (the condition passed: a starved
    task recovered) counts as a warning in the run's verdict, whatever severity it reached.

    ``vectorised``, declared beside ``evaluate`` by the rules that judge ``grad_stats``, is the same condition
    over a batch's columns: it may say True where ``evaluate`` finds nothing, never False where it finds
    something (``tests/test_columnar.py`` checks this). The offline fast path evaluates one by one only the
    records where some rule says True; without it, every record is evaluated.
    """

    name: str
    severity: str
    confirmed: bool
    kinds: frozenset[str]
    evaluate: Evaluate
    describe: str
    vectorised: Vectorised | None = None
    outcome: bool = False

    def confirm(self, th: Thresholds) -> int:
        """Consecutive samples this rule needs before it fires."""
        return th.confirm if self.confirmed else 1
