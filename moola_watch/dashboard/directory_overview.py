"""The overview of a directory of logs: one row per run, laid out for the terminal's width."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from moola_watch import rules
from moola_watch.dashboard.state import LogView, ViewOptions
from moola_watch.dashboard.summary import ago, run_verdict_text, worst_alert
from moola_watch.render import SEVERITY_STYLE, STATUS_STYLE, text, where

#: The overview's columns in order: (name, the narrowest terminal that shows it, in characters, its layout). The
#: log, status, verdict and alert always show; the others only where they leave those their room.
OVERVIEW_COLUMNS: tuple[tuple[str, int, dict[str, Any]], ...] = (
    # One line per run, so that a folder of logs fits a small terminal: the worst alert is cut to the width
    # (`check DIR` prints every message whole).
    ("log", 0, {"min_width": 8, "max_width": 28, "no_wrap": True, "overflow": "ellipsis"}),
    ("run", 125, {"no_wrap": True, "max_width": 24, "overflow": "ellipsis"}),  # --run ID takes the whole id
    ("status", 0, {"no_wrap": True}),
    ("at", 125, {"no_wrap": True}),
    ("records", 155, {"no_wrap": True, "justify": "right"}),
    ("last record", 155, {"no_wrap": True}),
    ("verdict", 0, {"no_wrap": True}),
    ("worst alert", 0, {"ratio": 1, "min_width": 20, "no_wrap": True, "overflow": "ellipsis"}),
)


@dataclass
class Overview:
    """One row per run across many logs: status, verdict (as ``check`` gives it) and the worst alert firing
    now (or, with none firing, the worst that fired); laid out for the terminal's width when drawn."""

    views: list[LogView]
    options: ViewOptions

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = [(name, layout) for name, narrowest, layout in OVERVIEW_COLUMNS if options.max_width >= narrowest]
        table = Table(title=f"moola-watch: {len(self.views)} logs", title_justify="left", expand=True)
        for name, layout in shown:
            table.add_column(name, **layout)
        for view in self.views:
            for cells in self._rows(view):
                table.add_row(*(cells.get(name, Text("")) for name, _ in shown))
        yield table

    def _rows(self, view: LogView) -> list[dict[str, Text]]:
        log = text(Path(view.scan.path).name)  # file names, not paths: the directory is one for all of them
        if not view.scan.engines:
            if view.scan.bad_lines:  # whole lines, none of them a record: another tool's file, not a log yet to come
                return [{"log": log, "run": Text("-"), "status": Text("not a log", style="red"), "records": Text("0"),
                         "worst alert": Text(f"not a moola log: no valid record ({view.scan.bad_lines} bad lines)",
                                             style="red")}]  # fmt: skip
            return [{"log": log, "run": Text("-"), "status": Text("waiting", style="dim"), "records": Text("0")}]
        rows = []
        for run, engine in view.scan.engines.items():
            status = engine.run_status
            rows.append({
                "log": log,
                "run": text(run),
                "status": Text(status, style=STATUS_STYLE.get(status, "")),
                "at": Text(where(engine.run.epoch, engine.run.step)),
                "records": Text(str(engine.run.records)),
                "last record": Text(ago(view.writer_now(run, self.options.now), engine.run.last_time)),
                "verdict": run_verdict_text(engine),
                "worst alert": _worst_alert_cell(engine),
            })  # fmt: skip
        return rows


def overview(views: list[LogView], options: ViewOptions) -> Overview:
    """The many-logs view (see :class:`Overview`)."""
    return Overview(views, options)


def _worst_alert_cell(engine: rules.RuleEngine) -> Text:
    firing = engine.firing()
    worst = worst_alert(engine)
    if worst is not None:
        cell = text(worst.message, SEVERITY_STYLE[worst.severity])
        if len(firing) > 1:
            cell.append(f"  (+{len(firing) - 1} more)", style="dim")
        return cell
    past = worst_alert(engine, ever=True)
    if past is None:
        return Text("none", style="green")
    return text(f"resolved: {past.message}", "dim")
