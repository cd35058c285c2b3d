"""The overview of a directory of logs: one row per run, laid out for the terminal's width."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from moola_watch import rules
from moola_watch.analyze import why_not_a_log
from moola_watch.counts import counted
from moola_watch.dashboard.state import LogView, ViewOptions
from moola_watch.dashboard.summary import ago, run_verdict_text, worst_alert
from moola_watch.middle_cut import MiddleCut, middle_cut
from moola_watch.render import SEVERITY_STYLE, STATUS_STYLE, run_labels, text, where

#: The overview's columns in order: (name, the narrowest terminal that shows it, in characters, its layout). The
#: log, status, verdict and alert always show; the others only where they leave those their room.
OVERVIEW_COLUMNS: tuple[tuple[str, int, dict[str, Any]], ...] = (
    # One line per run, so that a folder of logs fits a small terminal: the worst alert is cut to the width
    # (`check DIR` prints every message whole).
    # Names short of room lose their middle (MiddleCut): a sweep's names differ at the end.
    ("log", 0, {"min_width": 8, "max_width": 48, "no_wrap": True}),
    # A log's runs by the part of their ids that tells them apart, as analyze labels them (run_labels).
    ("run", 125, {"no_wrap": True, "max_width": 32}),
    ("status", 0, {"no_wrap": True}),
    ("at", 125, {"no_wrap": True}),
    ("records", 155, {"no_wrap": True, "justify": "right"}),
    ("last record", 155, {"no_wrap": True}),
    ("verdict", 0, {"no_wrap": True}),
    ("worst alert", 0, {"ratio": 1, "min_width": 20, "no_wrap": True, "overflow": "ellipsis"}),
)


@dataclass
class Overview:
    """One row per run across many logs: status, verdict (as ``check`` gives it) and the alert that decided
    that verdict (firing, or said to have resolved); laid out for the terminal's width when drawn."""

    views: list[LogView]
    options: ViewOptions

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = [(name, layout) for name, narrowest, layout in OVERVIEW_COLUMNS if options.max_width >= narrowest]
        with_run = any(name == "run" for name, _ in shown)
        table = Table(title=f"moola-watch: {counted(len(self.views), 'log')}", title_justify="left", expand=True)
        for name, layout in shown:
            table.add_column(name, **layout)
        for view in self.views:
            for cells in self._rows(view, with_run):
                table.add_row(*(cells.get(name, Text("")) for name, _ in shown))
        yield table

    def _rows(self, view: LogView, with_run: bool) -> list[dict[str, Text | MiddleCut | LogOfRun]]:
        """The rows of one log: each run's says which run it is, in the run column ``with_run``, else (a log of
        several runs) after the log's name."""
        name = Path(view.scan.path).name  # file names, not paths: the directory is one for all of them
        log = MiddleCut(text(name))
        if not view.scan.engines:
            if view.unreadable:  # damaged compressed data before any record
                return [{"log": log, "run": Text("-"), "status": Text("unreadable", style="red"), "records": Text("0"),
                         "worst alert": Text(view.unreadable.partition("; ")[0], style="red")}]  # fmt: skip
            if view.scan.bad_lines:  # whole lines, none of them a record: another tool's file, not a log yet to come
                return [{"log": log, "run": Text("-"), "status": Text("not a log", style="red"), "records": Text("0"),
                         "worst alert": Text(why_not_a_log([view.scan]), style="red")}]  # fmt: skip
            return [{"log": log, "run": Text("-"), "status": Text("waiting", style="dim"), "records": Text("0")}]
        several = len(view.scan.engines) > 1
        labels = run_labels(view.scan.engines)
        rows: list[dict[str, Text | MiddleCut | LogOfRun]] = []
        for run, engine in view.scan.engines.items():
            status = engine.run_status
            rows.append({
                "log": LogOfRun(log.text, text(labels[run], "cyan")) if several and not with_run else log,
                "run": MiddleCut(text(labels[run])),
                "status": Text(status, style=STATUS_STYLE.get(status, "")),
                "at": Text(where(engine.run.epoch, engine.run.step)),
                "records": Text(str(engine.run.records)),
                "last record": Text(ago(view.writer_now(run, self.options.now), engine.run.last_time)),
                "verdict": run_verdict_text(engine),
                "worst alert": _worst_alert_cell(engine),
            })  # fmt: skip
            if view.unreadable:  # judged on what came before damaged data: no verdict, and the row says why
                rows[-1].update({"verdict": Text("not judged", style="red"),
                                 "worst alert": Text(view.unreadable.partition("; ")[0], style="red")})  # fmt: skip
        return rows


@dataclass(frozen=True)
class LogOfRun:
    """A log's file name and the label of one of its runs (both inert text), on one line: where the overview has
    no room for a run column, the rows of a log of several runs still tell which run each is. Short of room, the
    name gives way (cut, ``…``) before the label does."""

    name: Text
    label: Text

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        label = cell_len(self.label.plain)
        return Measurement(label + 2, cell_len(self.name.plain) + 1 + label)  # at least `x label` (x: the name's …)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        label = self.label.copy()
        label.truncate(options.max_width, overflow="ellipsis")
        name = middle_cut(self.name, max(0, options.max_width - cell_len(label.plain) - 1))
        cell = Text.assemble(name, " ", label) if name.plain else label
        cell.no_wrap = True
        yield cell


def overview(views: list[LogView], options: ViewOptions) -> Overview:
    """The many-logs view (see :class:`Overview`)."""
    return Overview(views, options)


def _worst_alert_cell(engine: rules.RuleEngine) -> Text:
    """The alert that decided the run's verdict (:func:`worst_alert` ``ever``), with how many more fire now; one
    that has resolved says so, so that an error verdict is never shown beside a warning as if that were it."""
    decided = worst_alert(engine, ever=True)
    if decided is None:
        return Text("none", style="green")
    message = text(decided.message, SEVERITY_STYLE[rules.verdict_severity(decided)])
    firing = len(engine.firing())
    if decided.state == rules.FIRING:
        cell, more = message, f"+{firing - 1} more"
    else:
        cell, more = Text.assemble(("resolved: ", "dim"), message), f"+{firing} firing"
    if not more.startswith("+0 "):
        cell.append(f"  ({more})", style="dim")
    return cell
