"""The comparison table: one row per run, the numbers a person compares across a sweep or a before/after."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from moola_watch import rules
from moola_watch.html_report.progress import loss_columns, metric_columns
from moola_watch.html_report.runs import RunData

QUANTITIES = ("log", "run id", "model", "status", "verdict", "last record at", "alerts", "mean of the mean layer norm",
              "peak max layer norm", "non-finite measurements", "task balance (window mean)",
              "thresholds from")  # fmt: skip


def number(value: float | None, digits: int = 4) -> str:
    """A compact number, ``-`` when unknown, ``nan`` when it was NaN."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def last_value(recorded: pd.DataFrame, column: str) -> float | None:
    """The column's last recorded value, NaN where the log recorded NaN (``recorded``: a table of
    :func:`moola_watch.analyze.as_recorded`, whose missing cells are values not recorded)."""
    if column not in recorded:
        return None
    values = recorded[column].dropna()
    return float(values.iloc[-1]) if len(values) else None


def alert_counts(alerts: Sequence[rules.Alert]) -> str:
    """``1 error, 2 warning`` (worst first), or ``none``: each alert at the severity it gives the run's verdict
    (a recovered collapse: a warning)."""
    counts = Counter(rules.verdict_severity(a) for a in alerts)
    ranked = sorted(counts, key=lambda s: -rules.SEVERITY_RANK.get(s, 0))
    return ", ".join(f"{counts[s]} {s}" for s in ranked) or "none"


def balance_cell(engine: rules.RuleEngine) -> str:
    """The collapse window's mean ratio and its verdict, naming the task another dominates (``5.66e+03 (tag
    dominated)``, ``3.1 (tag imbalanced)``; the pointer/type states name the dominating one)."""
    balance = engine.balance()
    if balance.mean is None:  # in words, with how far the window got: not the state's identifier
        return f"{balance.text.lower()} ({balance.samples} of {engine.thresholds.window} samples)"
    state = balance.state
    if state in ("dominated", "imbalanced") and (dominated := engine.most_dominated()) is not None:
        state = f"{dominated[0]} {state}"
    return f"{number(balance.mean, 3)} ({state})"


def final_columns(runs: Sequence[RunData]) -> list[str]:
    """Loss and metric columns of the epochs frames, for the 'final value' part of the table."""
    out: list[str] = []
    for data in runs:
        frame = data.frames["epochs"]
        out += [c for c in loss_columns(frame) + metric_columns(frame) if c not in out]
    return out


def comparison(runs: Sequence[RunData]) -> tuple[list[str], list[list[str]]]:
    """Headers (a blank, then one column per run) and rows (one per quantity), raw text: the page escapes every
    cell. Runs are columns so that a sweep reads across and the many quantities read down."""
    finals = final_columns(runs)
    columns = []
    for data in runs:
        summary = data.engine.summary()
        state = data.engine.run
        columns.append(
            [
                data.log,
                data.run,
                state.model or "?",
                data.engine.run_status,
                data.verdict,
                rules.position(state.epoch, state.step),
                alert_counts(data.alerts),
                number(summary.mean_norm),
                number(summary.max_norm_peak),
                str(summary.nonfinite_samples),
                balance_cell(data.engine),
                data.thresholds_from,
                *(number(last_value(data.recorded_epochs, column)) for column in finals),
            ]
        )
    names = [*QUANTITIES, *(f"final {c}" for c in finals)]
    return ["", *(data.label for data in runs)], [[name, *cells] for name, *cells in zip(names, *columns, strict=True)]
