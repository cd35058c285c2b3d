"""Rich renderables shared by ``analyze`` and the live dashboard: styles, numbers, sparklines, alerts.

Everything that came from a log is wrapped in ``Text`` after :func:`moola_watch.textsafe.inert`, so no
Rich markup and no terminal control sequence from a file is ever interpreted.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from moola_watch import rules
from moola_watch.textsafe import inert

SEVERITY_STYLE = {
    "info": "cyan",
    "warning": "yellow",
    "error": "bold red",
    "critical": "bold white on red",
}
HEALTHY_STYLE = "green"
STATUS_STYLE = {
    "running": "green",
    "completed": "bold green",
    "failed": "bold red",
    "dead": "bold red",  # its writer exited without a run_end (killed, or a crash outside Python)
    "interrupted": "yellow",
    "stale": "bold yellow",
    "unterminated": "yellow",
    "continued": "dim",  # the run goes on in another log of the folder (its log was rotated there)
    "empty": "dim",
}
VERDICT_STYLE = {"healthy": HEALTHY_STYLE, "unterminated": "yellow", "no_measurements": "yellow", **SEVERITY_STYLE}
STATE_ORDER = {rules.FIRING: 0, rules.PENDING: 1, rules.RESOLVED: 2}
SPARK = "▁▂▃▄▅▆▇█"


#: Characters of an alert's message or recommendation shown (they quote the evidence: a few hundred as a rule).
ALERT_TEXT = 2000
RUN_LABEL_WIDTH = 16  # run ids longer than this are shown by the part that tells them apart
SEPARATORS = frozenset("-_.:/#@+ ")


def text(value: object, style: str = "", limit: int | None = None) -> Text:
    """Untrusted ``value`` as inert Rich text (cut at ``limit`` characters; default :data:`inert`'s)."""
    return Text(inert(value) if limit is None else inert(value, limit), style=style)


def number(value: float | None, digits: int = 4) -> str:
    """A measurement for a table: ``digits`` significant figures, ``nan``/``inf`` spelled out, ``-`` if absent."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def sparkline(values: Sequence[float | None], width: int = 24, log: bool = False) -> str:
    """The last ``width`` values as block characters (log10 scale if ``log``); gaps for missing values."""
    recent = list(values)[-width:]
    scaled = [
        (math.log10(v) if log else v) if v is not None and math.isfinite(v) and (v > 0 or not log) else None
        for v in recent
    ]
    known = [v for v in scaled if v is not None]
    if not known:
        return " " * len(recent)
    low, high = min(known), max(known)
    span = high - low or 1.0
    return "".join(" " if v is None else SPARK[min(7, int((v - low) / span * 7.999))] for v in scaled)


def where(epoch: int | None, step: int | None) -> str:
    """'epoch 12, step 340' (whichever is known), '-' when neither is."""
    return "-" if epoch is None and step is None else rules.position(epoch, step)


def run_labels(runs: Iterable[str], width: int = RUN_LABEL_WIDTH) -> dict[str, str]:
    """How each run id is shown in a table column: as it is when every id is at most ``width`` characters (or
    there is one run); else without the start all of them share, cut back to a separator (``-``, ``_``, ...) and
    marked ``…``: ``enhanced_simple_lstm-20261130-101332-9713`` and ``...-101327-9710`` become ``…101332-9713``
    and ``…101327-9710``. A label still too long folds in its column, never cut."""
    runs = list(dict.fromkeys(runs))
    if len(runs) < 2 or all(len(run) <= width for run in runs):
        return {run: run for run in runs}
    prefix = _common_start(runs)
    shortest = min(map(len, runs))
    cuts = [i + 1 for i, ch in enumerate(prefix) if ch in SEPARATORS and i + 1 < shortest]  # each keeps a tail
    cut = max(cuts, default=0)
    if cut < 2:  # nothing worth leaving out
        return {run: run for run in runs}
    return {run: "…" + run[cut:] for run in runs}


def _common_start(texts: Sequence[str]) -> str:
    """The longest start all of ``texts`` share: that of the first and the last in sorted order."""
    first, last = min(texts), max(texts)
    length = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), None)
    return first[:length] if length is not None else first[: len(last)]


def severity_text(severity: str | None) -> Text:
    if severity is None:
        return Text("healthy", style=HEALTHY_STYLE)
    return Text(severity, style=SEVERITY_STYLE.get(severity, ""))


def ordered_alerts(alerts: Sequence[tuple[str, rules.Alert]]) -> list[tuple[str, rules.Alert]]:
    """Firing first, then pending, then resolved; the most severe first within each."""
    return sorted(alerts, key=lambda item: (STATE_ORDER[item[1].state], -rules.SEVERITY_RANK[item[1].severity]))


#: Cells the message column keeps beside the others; short of them, each alert's state, rule, start and value
#: stack in one narrow column (on a 60-column terminal the message was squeezed to one cell a line).
MESSAGE_MIN_WIDTH = 30
FIXED_COLUMNS = ("state", "rule", "since", "value")
RUN_WIDTH = 24  # cells a run id's column folds at


@dataclass(frozen=True)
class AlertsTable:
    """Alerts in :func:`ordered_alerts`' order, each with when it began and what to do, laid out for the width
    they are drawn in: four narrow columns beside the message where it keeps ``MESSAGE_MIN_WIDTH`` cells, else
    one that stacks them."""

    rows: tuple[tuple[Text, ...], ...]  # per alert: (run,) state, rule, since, value, message
    show_run: bool
    caption: str | None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)

    def table(self, width: int) -> Table:
        """The table for a width of ``width`` cells."""
        fixed = [max((cell_len(line) for row in self.rows for line in row[i].plain.split("\n")), default=0)
                 for i in range(len(self.rows[0]) - 1)] if self.rows else []  # fmt: skip
        if self.show_run and fixed:
            fixed[0] = min(fixed[0], RUN_WIDTH)
        wide = width - sum(fixed) - 3 * len(fixed) - 4 >= MESSAGE_MIN_WIDTH  # each column's padding and border
        table = Table(title="Alerts", title_justify="left", expand=True, show_lines=not wide, caption=self.caption)
        if wide:
            if self.show_run:  # a run id, from the log: any length
                table.add_column("run", overflow="fold", max_width=RUN_WIDTH)
            for name in FIXED_COLUMNS:
                table.add_column(name, no_wrap=True)
        else:
            names = (("run",) if self.show_run else ()) + FIXED_COLUMNS
            table.add_column(" / ".join(names), overflow="fold", max_width=max(12, width // 3))
        table.add_column("message / recommendation", ratio=1, overflow="fold")
        for *key, message in self.rows:
            table.add_row(*(key if wide else [Text("\n").join(key)]), message)
        return table


def alerts_table(alerts: Sequence[tuple[str, rules.Alert]], *, show_run: bool = False, limit: int = 50) -> AlertsTable:
    """The :class:`AlertsTable` of ``alerts``. Every firing alert is shown; ``limit`` caps the rows only as far as
    pending and resolved ones fill them."""
    ordered = ordered_alerts(alerts)
    limit = max(limit, sum(1 for _run, alert in alerts if alert.state == rules.FIRING))
    rows = []
    for run, alert in ordered[:limit]:
        state_style = SEVERITY_STYLE[alert.severity] if alert.state == rules.FIRING else "dim"
        detail = text(alert.message, limit=ALERT_TEXT)
        detail.append("\n→ ", style="dim")
        detail.append_text(text(alert.recommendation, "italic", ALERT_TEXT))
        if alert.state == rules.RESOLVED:
            detail.append(f"  (resolved at {where(alert.resolved_epoch, alert.resolved_step)})", style="dim")
        state = Text(alert.state, style=state_style)
        state.append("\n")
        state.append_text(severity_text(alert.severity))
        since = where(alert.first_epoch, alert.first_step).replace(", ", "\n")
        rule = text(alert.rule)
        rule.append("\n")
        rule.append_text(text(alert.subject))
        rows.append((*([text(run)] if show_run else []), state, rule, Text(since), Text(number(alert.value)), detail))
    if not alerts:
        rows.append((*([Text("")] if show_run else []), Text("none", style=HEALTHY_STYLE), *[Text("")] * 4))
    caption = f"{len(ordered) - limit} more not shown (pending or resolved)" if len(ordered) > limit else None
    return AlertsTable(tuple(rows), show_run, caption)


def stdout_gone() -> None:
    """The reader of stdout went away (``| head``): whatever is left to print goes nowhere, and a command that
    judges saved logs goes on judging every one, writes its files, and exits with the code a full read gives."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
