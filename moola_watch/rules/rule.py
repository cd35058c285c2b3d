"""A rule as a small declared object: its name, the worst severity it raises, how many samples confirm it,
which records it judges, and its evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from moola_watch import schema
from moola_watch.rules.evidence import Evidence
from moola_watch.rules.lifecycle import Observation
from moola_watch.rules.thresholds import Thresholds

#: (subject, the condition as this record shows it, or None where it is absent) for each subject judged.
Findings = Iterable[tuple[str, Observation | None]]
Evaluate = Callable[[Evidence, schema.Record, Thresholds], Findings]


@dataclass(frozen=True)
class Rule:
    """One rule. ``evaluate`` reads the run's evidence (already updated with the record) and the record, and
    says per subject whether the condition holds; the engine runs the result through the lifecycle.

    ``severity`` is the worst it raises (an observation may be milder, e.g. norm level's warning band);
    ``confirmed`` rules wait ``Thresholds.confirm`` consecutive samples before firing, the others fire at once.
    """

    name: str
    severity: str
    confirmed: bool
    kinds: frozenset[str]
    evaluate: Evaluate
    describe: str

    def confirm(self, th: Thresholds) -> int:
        """Consecutive samples this rule needs before it fires."""
        return th.confirm if self.confirmed else 1
