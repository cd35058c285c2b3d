"""One run's dashboard fitted to a terminal too short for all of it: what each part shows, and the line that
says what is left out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from moola_watch import rules
from moola_watch.counts import counted
from moola_watch.dashboard.panels import (
    FULL_ALERTS,
    SIDE_BY_SIDE_WIDTH,
    header_panel,
    layers_table,
    one_line,
    panels_row,
)
from moola_watch.dashboard.state import LogView, RunView, ViewOptions
from moola_watch.render import ALERT_TEXT, HEALTHY_STYLE, SEVERITY_STYLE, alerts_table, ordered_alerts, text, where

MIN_PANEL_ROWS = 3  # a panel's rows that come before the layer table gets any
MESSAGE_MIN_CELLS = 16  # an alert line's message keeps this many cells however narrow the terminal


def key_widths(needed: Sequence[int], width: int) -> tuple[int, int, int]:
    """The widest (cells) an alert line's severity, rule and subject may be on a ``width``-cell terminal, for the
    ``needed`` widths of those shown (a subject, a task's name from the log, at most 24): as needed, less in
    proportion where the message would otherwise keep fewer than ``MESSAGE_MIN_CELLS`` (at 40 columns it had
    none left)."""
    wanted = (needed[0], needed[1], min(needed[2], 24))
    room = width - MESSAGE_MIN_CELLS - 8  # each column's padding
    if sum(wanted) <= room:
        return wanted
    severity, rule, subject = (max(3, most * room // sum(wanted)) for most in wanted)
    return severity, rule, subject


def alert_lines(
    alerts: Sequence[tuple[str, rules.Alert]],
    shown: int,
    advised: int = 0,
    whole: int = 0,
    whole_advice: int = 0,
    width: int = 200,
) -> Table:
    """The first ``shown`` alerts in :func:`ordered_alerts`' order, one line each: severity, rule, subject and the
    message cut to the width (a pending or resolved alert, dimmed, says so first); the first ``advised`` with their
    recommendation on a line of its own; of those, the first ``whole_advice`` with it whole, folded over as many
    lines as it takes, and the first ``whole`` with the message whole too; ``none`` when there is no alert. The
    first three columns are cut (…) to :func:`key_widths` of the terminal's ``width`` cells."""
    table = Table(title="Alerts", title_justify="left", expand=True, box=None, show_header=False)
    listed = [alert for _run, alert in ordered_alerts(alerts)[:shown]]
    needed = tuple(max((cell_len(str(getattr(a, key))) for a in listed), default=0)
                   for key in ("severity", "rule", "subject"))  # fmt: skip
    for name, most in zip(("severity", "rule", "subject"), key_widths(needed, width), strict=True):
        table.add_column(name, no_wrap=True, max_width=most, overflow="ellipsis")
    table.add_column("message", ratio=1, overflow="fold")
    for index, alert in enumerate(listed):
        if alert.state == rules.FIRING:
            severity, muted, message = SEVERITY_STYLE[alert.severity], "", text(alert.message, limit=ALERT_TEXT)
        else:
            when = f" at {where(alert.resolved_epoch, alert.resolved_step)}" if alert.state == rules.RESOLVED else ""
            severity, muted = "dim", "dim"
            message = text(f"{alert.state}{when}: {alert.message}", "dim", ALERT_TEXT)
        cell: list[RenderableType] = [message if index < whole else one_line(message)]
        if index < max(advised, whole_advice, whole):
            advice = Text("→ ", style="dim")
            advice.append_text(text(alert.recommendation, "italic", ALERT_TEXT))
            cell.append(advice if index < max(whole, whole_advice) else one_line(advice))
        row = Text(alert.severity, style=severity), text(alert.rule, muted), text(alert.subject, muted), Group(*cell)
        table.add_row(*row)
    if not alerts:
        table.add_row(Text("none", style=HEALTHY_STYLE))
    return table


@dataclass(frozen=True)
class Fit:
    """How much of each part a short dashboard shows, below its header."""

    alerts: int = 0  # alert lines, the firing ones first
    panel_rows: int = 0  # lines of each panel's body (0: no panels)
    layer_ends: int = 0  # layers at each end of the norm order (0: no layer table)
    advised: int = 0  # of the firing alerts shown, how many have their recommendation on a second line


@dataclass(frozen=True)
class Parts:
    """What a short dashboard's parts hold, and their heights in lines."""

    firing: int  # alerts firing
    alerts: int  # alerts in all
    panel_rows: int  # lines of the longer panel's body, one line a row
    layers: tuple[int, ...]  # lines of the layer table showing 1, 2, ... layers at each end; () with none
    stacked_panels: int = 1  # panels one above the other (a narrow terminal); 1: side by side

    def whole(self) -> Fit:
        """All of every part; recommendations only fill what room is left, never missed."""
        return Fit(self.alerts, self.panel_rows, len(self.layers))

    def advised(self, fit: Fit) -> int:
        """The recommendations ``fit`` shows: only a firing alert's, and only under its line."""
        return min(fit.advised, fit.alerts, self.firing)

    def height(self, fit: Fit) -> int:
        """Lines taken by what ``fit`` shows: each part's title or borders with its lines."""
        alerts = 2 if not self.alerts else 1 + fit.alerts + self.advised(fit) if fit.alerts else 0  # "none" shows
        panels = (fit.panel_rows + 2) * self.stacked_panels if fit.panel_rows else 0
        layers = self.layers[fit.layer_ends - 1] if fit.layer_ends else 0
        return alerts + panels + layers


def fit_short(room: int, parts: Parts) -> Fit:
    """What ``room`` lines show of ``parts``: each part grown in turn while it fits (every firing alert, the
    panels' first rows, the layer table's extremes, the panels' other rows, the table's other layers, the pending
    and resolved alerts, then the firing alerts' recommendations), with a line kept to say what is left out unless
    all of every part fits."""
    whole = parts.whole()
    if parts.height(whole) > room:
        room -= 1  # the line that says what is left out
    growth = (("alerts", parts.firing), ("panel_rows", min(MIN_PANEL_ROWS, whole.panel_rows)),
              ("layer_ends", min(1, whole.layer_ends)), ("panel_rows", whole.panel_rows),
              ("layer_ends", whole.layer_ends), ("alerts", whole.alerts), ("advised", parts.firing))  # fmt: skip
    shown = Fit()
    for part, most in growth:
        while getattr(shown, part) < most:
            grown = replace(shown, **{part: getattr(shown, part) + 1})
            if parts.height(grown) > room:
                break
            shown = grown
    return shown


def left_out(parts: Parts, fit: Fit) -> list[str]:
    """What a short dashboard leaves out, in words."""
    missing = []
    if hidden := parts.alerts - fit.alerts:
        firing = f" ({parts.firing - fit.alerts} firing)" if parts.firing > fit.alerts else ""
        missing.append(f"{counted(hidden, 'more alert')}{firing}")
    if not fit.panel_rows:
        missing.append("the gradient and task balance panels")
    elif fit.panel_rows < parts.panel_rows:
        missing.append(f"{parts.panel_rows - fit.panel_rows} panel rows")
    if parts.layers and not fit.layer_ends:
        missing.append("the layer table")
    elif parts.layers and fit.layer_ends < len(parts.layers):
        missing.append(f"{parts.layers[-1] - parts.layers[fit.layer_ends - 1]} layer rows")
    return missing


def left_out_line(missing: list[str]) -> Text:
    """What did not fit, the way to see it first (a line cut to the width must keep its advice)."""
    return one_line(Text(f"… not shown (a taller terminal or --once shows it): {', '.join(missing)}", "yellow"))


@dataclass(frozen=True)
class FittedDashboard:
    """:func:`run_dashboard` fitted to the screen (the live view): all of it when it fits; else with fewer layers;
    else a short dashboard (see :func:`fit_short`) whose header, alerts and panels take one line a row and whose
    last line says what it leaves out."""

    view: LogView
    run: str
    options: ViewOptions

    @property
    def engine(self) -> rules.RuleEngine:
        return self.view.scan.engines[self.run]

    @property
    def history(self) -> RunView:
        return self.view.runs.get(self.run, RunView())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Rich renders a Live screen's children with no height but the screen's as max_height.
        unbounded = options.reset_height()

        def render(part: RenderableType) -> list[list[Segment]]:
            return console.render_lines(part, unbounded, pad=False)

        lines = self.fitted(render, options.max_height, options.max_width)
        for line in lines:
            yield from line
            yield Segment.line()

    def fitted(
        self, render: Callable[[RenderableType], list[list[Segment]]], height: int, width: int
    ) -> list[list[Segment]]:
        """The lines that fit ``height`` (of ``width`` cells), each part rendered by ``render``."""
        alerts = [(self.run, alert) for alert in self.engine.alerts]
        whole: list[list[Segment]] = []
        for part in (header_panel(self.view, self.run, self.options), alerts_table(alerts, limit=FULL_ALERTS),
                     panels_row(self.engine, self.history)):  # fmt: skip
            whole += render(part)
            if len(whole) >= height:  # not a line left for the layers: the short dashboard
                break
        else:
            for ends in range(self.options.top, 0, -1):
                layers = render(layers_table(self.engine, replace(self.options, top=ends)))
                if len(whole) + len(layers) <= height:
                    return whole + layers
        return self.short(render, height, width)

    def short(
        self, render: Callable[[RenderableType], list[list[Segment]]], height: int, width: int
    ) -> list[list[Segment]]:
        """The short dashboard's lines for ``height`` (of ``width`` cells; see :func:`fit_short`)."""
        engine, history = self.engine, self.history
        alerts = [(self.run, alert) for alert in engine.alerts]
        head = render(header_panel(self.view, self.run, self.options, short=True))
        row = panels_row(engine, history, short=True)
        panels = render(row)
        bodies = [len(render(panel)) - 2 for panel in row.panels]  # each less its borders
        stacked = len(bodies) if width < SIDE_BY_SIDE_WIDTH else 1
        tables = [render(layers_table(engine, replace(self.options, top=ends), short=True))
                  for ends in range(1, self.options.top + 1)] if engine.last_grad_stats else []  # fmt: skip
        parts = Parts(len(engine.firing()), len(alerts), max(bodies), tuple(len(table) for table in tables), stacked)
        fit = fit_short(height - len(head), parts)
        lines = partial(alert_lines, alerts, fit.alerts, parts.advised(fit), width=width)
        alert_block = render(lines()) if fit.alerts or not alerts else []
        rest = []
        if fit.panel_rows:
            cut = fit.panel_rows < parts.panel_rows
            rest += render(panels_row(engine, history, short=True, rows=fit.panel_rows)) if cut else panels
        if fit.layer_ends:
            rest += tables[fit.layer_ends - 1]
        if missing := left_out(parts, fit):
            rest += render(left_out_line(missing))
        # Rows to spare go to the firing alerts shown: their recommendations whole first (the weights to set are
        # what a person acts on), then their messages whole, as many as fit.
        room = height - len(head) - len(rest)
        firing = min(fit.alerts, parts.firing)
        for whole, advice in [*((0, n) for n in range(1, firing + 1)), *((n, firing) for n in range(1, firing + 1))]:
            longer = render(lines(whole=whole, whole_advice=advice))
            if len(longer) > room:
                break
            alert_block = longer
        return head + alert_block + rest
