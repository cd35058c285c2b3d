"""A run in a few words, as the dashboard's header and the overview's rows both give it: its verdict, its worst
alert, how long ago its last record was."""

from __future__ import annotations

from rich.text import Text

from moola_watch import rules
from moola_watch.analyze import VERDICT_UNTERMINATED, run_verdict
from moola_watch.durations import human_duration
from moola_watch.render import VERDICT_STYLE


def ago(now: float, last: float | None) -> str:
    """How long before ``now`` ``last`` was, in words; ``-`` for never (both unix seconds)."""
    if last is None:
        return "-"
    return f"{human_duration(now - last)} ago"


# Among alerts of equal severity, the one a person should read first.
RULE_PRIORITY = (rules.NONFINITE, rules.COLLAPSE, rules.RUN_FAILED, rules.EXPLODING, rules.NORM_LEVEL,
                 rules.VANISHING, rules.IMBALANCE, rules.LEFT_OUT, rules.BALANCE_UNMEASURED, rules.GRADS_UNMEASURED,
                 rules.AMP_OVERFLOW, rules.STALE, rules.RUN_INTERRUPTED)  # fmt: skip
_PRIORITY = {rule: rank for rank, rule in enumerate(RULE_PRIORITY)}


def worst_alert(engine: rules.RuleEngine, *, ever: bool = False) -> rules.Alert | None:
    """The most severe firing alert of a run (the most telling rule among equals), if any; with ``ever``, of
    every alert that fired, resolved ones included, each at the severity it gives the run's verdict (a recovered
    collapse: a warning) and a firing one before a resolved one among equals: the alert that decided the run's
    verdict."""
    fired = [a for a in engine.alerts if a.state != rules.PENDING] if ever else engine.firing()
    if not fired:
        return None
    return max(fired, key=lambda a: (rules.SEVERITY_RANK[rules.verdict_severity(a)], a.state == rules.FIRING,
                                     -_PRIORITY.get(a.rule, len(_PRIORITY))))  # fmt: skip


def run_verdict_text(engine: rules.RuleEngine) -> Text:
    """The run's verdict as ``check`` gives it: the worst severity any alert reached; else no_measurements,
    healthy (ended) or unterminated (no run_end yet)."""
    verdict = run_verdict(engine)
    return Text(verdict, style=VERDICT_STYLE.get(verdict, ""))


def verdict_text(engine: rules.RuleEngine) -> Text:
    """:func:`run_verdict_text`, and what fires now when that is milder (a NaN step that has passed still fails
    the run), or what an unterminated verdict means while the run goes on."""
    verdict = run_verdict_text(engine)
    verdict.stylize("bold")
    worst, now = engine.worst_severity(), worst_alert(engine)
    if worst is not None and (now is None or now.severity != worst):
        verdict.append(f" (now: {now.severity if now else 'nothing firing'})", style="dim")
    elif verdict.plain == VERDICT_UNTERMINATED and engine.run_status == "running":
        verdict.append(" (no alert so far; no run_end yet)", style="dim")
    return verdict
