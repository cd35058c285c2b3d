"""Rich renderables of the live view: one run's dashboard, and the one-row-per-run overview of a directory.

Pure rendering of state handed in (:class:`RunView`, :class:`LogView`); the loop that feeds them lives in
:mod:`moola_watch.follow`. Everything from the log is shown through :func:`moola_watch.render.text`.
"""

from __future__ import annotations

import copy
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from moola_watch import rules, schema
from moola_watch.analyze import VERDICT_UNTERMINATED, LogScan, run_verdict
from moola_watch.durations import human_duration
from moola_watch.render import (
    HEALTHY_STYLE,
    SEVERITY_STYLE,
    STATUS_STYLE,
    VERDICT_STYLE,
    alerts_table,
    number,
    ordered_alerts,
    sparkline,
    text,
    where,
)
from moola_watch.rules import run as run_rules

HISTORY = 60  # recent values kept per run for the trend sparklines
MIN_STALE_GRACE_S = 1.0  # the shortest grace a log's history gets before it can make its run stale


@dataclass
class RunView:
    """Recent values of one run, for trends (bounded, whatever the log's length)."""

    mean_norms: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    max_norms: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    first_weights: dict[str, float] | None = None  # the task loss weights the run started with
    weights: dict[str, float] | None = None  # the latest (an automatic balancer may have changed them)

    def observe(self, record: schema.Record) -> None:
        kind = record["kind"]
        if kind == schema.GRAD_STATS:
            self.mean_norms.append(record["mean_norm"])
            self.max_norms.append(record["max_norm"])
        elif kind == schema.TASK_BALANCE:
            if record.get("ratio") is not None:
                self.ratios.append(record["ratio"])
            self._weights(record.get("weights"))
        elif kind == schema.LOSS_WEIGHTS:
            self._weights(record.get("previous"))
            self._weights(record["weights"])

    def _weights(self, weights: dict[str, float] | None) -> None:
        if weights:
            self.first_weights = self.first_weights or dict(weights)
            self.weights = dict(weights)


def weights_text(history: RunView) -> str | None:
    """The task loss weights now, and what they started as when they changed (``type 1 -> 2.3``)."""
    if not history.weights:
        return None
    first = history.first_weights or {}
    return "  ".join(
        f"{task} {number(first[task], 3)} -> {number(w, 3)}" if task in first and first[task] != w
        else f"{task} {number(w, 3)}"
        for task, w in history.weights.items()
    )  # fmt: skip


@dataclass
class LogView:
    """A followed log: its scan (rules, counts) and the trend history of each run in it."""

    scan: LogScan
    runs: dict[str, RunView] = field(default_factory=dict)
    # Per run, how far the watcher's clock is ahead of the writer's (seconds): the latest live record's arrival
    # minus its ``time``. A trainer on another host whose clock is off is judged on its own clock, so its
    # records never look minutes old (or from the future) the moment they arrive. What the log held when it was
    # first read is history and keeps its own times (a log copied from a finished or killed run is as old as its
    # records), except a record from the future, which was written at the latest when it was read.
    clock_offsets: dict[str, float] = field(default_factory=dict)
    history_read: bool = False  # the log's first read is done: what comes now is live
    # Per run, until when (the watcher's clock) its history is not called stale: long enough for a trainer whose
    # clock is behind to show, by its next record, that it is alive (twice its longest wait between records).
    stale_grace: dict[str, float] = field(default_factory=dict)

    def observe(self, record: schema.Record, arrived: float) -> None:
        """Take a record read at ``arrived`` (unix seconds, the watcher's clock)."""
        self.runs.setdefault(record["run"], RunView()).observe(record)
        written = record["time"]
        if math.isfinite(written) and (self.history_read or written > arrived):
            self.clock_offsets[record["run"]] = arrived - written

    def end_history(self, now: float) -> None:
        """The log's first read is done at ``now`` (unix seconds): later records are live, and the run that
        wrote last gets its grace before its history can make it stale."""
        self.history_read = True
        current = self.scan.current
        if current is not None and current.run.run is not None:
            wait = max(run_rules.STALE_GAPS * current.run.longest_gap, MIN_STALE_GRACE_S)
            self.stale_grace[current.run.run] = now + min(current.thresholds.stale_seconds, wait)

    def stale_judged(self, run: str, now: float) -> bool:
        """Whether ``run``'s silence is judged at ``now``: not in its grace, unless a record came live since."""
        return run in self.clock_offsets or now >= self.stale_grace.get(run, 0.0)

    def writer_now(self, run: str, now: float) -> float:
        """The watcher's ``now`` (unix seconds) on ``run``'s writer's clock."""
        return now - self.clock_offsets.get(run, 0.0)


@dataclass(frozen=True)
class ViewOptions:
    top: int = 4  # layers shown at each end
    layers: re.Pattern[str] | None = None  # only layers whose name matches
    now: float = 0.0  # wall clock, unix seconds, for "last record N s ago"


def _age(now: float, last: float | None) -> str:
    if last is None:
        return "-"
    return f"{human_duration(now - last)} ago"


# Among alerts of equal severity, the one a person should read first.
RULE_PRIORITY = (rules.NONFINITE, rules.COLLAPSE, rules.RUN_FAILED, rules.EXPLODING, rules.NORM_LEVEL,
                 rules.VANISHING, rules.IMBALANCE, rules.AMP_OVERFLOW, rules.STALE,
                 rules.RUN_INTERRUPTED)  # fmt: skip
_PRIORITY = {rule: rank for rank, rule in enumerate(RULE_PRIORITY)}


def worst_alert(engine: rules.RuleEngine, *, ever: bool = False) -> rules.Alert | None:
    """The most severe firing alert of a run (the most telling rule among equals), if any; with ``ever``, of
    every alert that fired, resolved ones included."""
    fired = [a for a in engine.alerts if a.state != rules.PENDING] if ever else engine.firing()
    if not fired:
        return None
    return max(fired, key=lambda a: (rules.SEVERITY_RANK[a.severity], -_PRIORITY.get(a.rule, len(_PRIORITY))))


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


def one_line(line: Text, cut: bool = True) -> Text:
    """``line``, kept to one line and cut to the width with an ellipsis when ``cut``."""
    if cut:
        line.no_wrap, line.overflow = True, "ellipsis"
    return line


def header(view: LogView, run: str, options: ViewOptions, short: bool = False) -> Group:
    """The run, its status and verdict; where it is and how fresh; the log and its thresholds. ``short``: the
    lines after the first two (the log, an error) take one line each, cut to the width."""
    engine = view.scan.engines[run]
    status = engine.run_status
    verdict = verdict_text(engine)
    first = text(f"run {run}", "bold")
    runs = list(view.scan.engines)
    if len(runs) > 1:  # the alerts below are this run's only
        first.append(f" ({runs.index(run) + 1} of {len(runs)} runs in this log; --run ID for another)", style="dim")
    first.append("  ")
    first.append(f" {status.upper()} ", style=STATUS_STYLE.get(status, "") + " reverse")
    first.append("  verdict: ")
    first.append_text(verdict)
    second = text(f"model {engine.run.model or '?'}   ")
    age = _age(view.writer_now(run, options.now), engine.run.last_time)
    second.append(
        f"{where(engine.run.epoch, engine.run.step)}   {engine.run.records} records, "
        f"{view.scan.bad_lines} bad lines skipped   last record {age}"
    )
    lines = [first, second, text(f"{view.scan.path}   thresholds: {view.scan.threshold_sources[run]}", "dim")]
    if engine.run.error:
        lines.append(text(f"error: {engine.run.error}", "red"))
    return Group(*lines[:2], *(one_line(line, short) for line in lines[2:]))


def header_panel(view: LogView, run: str, options: ViewOptions, short: bool = False) -> Panel:
    return Panel(header(view, run, options, short), title="moola-watch", title_align="left")


def label_grid(short: bool) -> Table:
    """A panel's body: bold labels and their values; ``short``: each value on one line, cut to the width."""
    if not short:
        body = Table.grid(padding=(0, 1))
        body.add_column(style="bold")
        body.add_column()
        return body
    # The values take what the labels leave: a table narrower than its lines squeezes its labels out first.
    body = Table.grid(padding=(0, 1), expand=True)
    body.add_column(style="bold", no_wrap=True)
    body.add_column(no_wrap=True, ratio=1)
    return body


def gradients_panel(engine: rules.RuleEngine, history: RunView, short: bool = False) -> Panel:
    stats = engine.last_grad_stats
    th = engine.thresholds
    if stats is None:
        return Panel(Text("waiting for gradient statistics…", style="dim"), title="Gradients")
    level = rules.classify_norm_level(stats["mean_norm"], th) if math.isfinite(stats["mean_norm"]) else None
    style = "" if level is None or level.severity is None else SEVERITY_STYLE[level.severity]
    body = label_grid(short)
    body.add_row("mean norm", Text(number(stats["mean_norm"]), style=style or "green"))
    body.add_row("max norm", Text(number(stats["max_norm"])))
    body.add_row("total norm", Text(number(stats["total_norm"])))
    bad = stats["nonfinite_count"]
    body.add_row("non-finite", Text(str(bad), style="bold white on red" if bad else "green"))
    body.add_row("trend", Text(sparkline(list(history.mean_norms), 30, log=True), style="cyan"))
    status = level.status if level else "non-finite"
    action = f" — {level.action}" if level and level.severity else ""
    body.add_row(
        "status", Text(f"{status} (healthy {th.healthy_norm_low}-{th.healthy_norm_high}){action}", style=style)
    )
    return Panel(body, title=f"Gradients (epoch {stats.get('epoch')})", border_style=style or "green")


def balance_panel(engine: rules.RuleEngine, history: RunView, short: bool = False) -> Panel:
    latest = engine.last_balance
    th = engine.thresholds
    if latest is None:
        return Panel(Text("no task-balance samples yet (single-task run?)", style="dim"), title="Task balance")
    if latest.get("ratio") is None:
        return tasks_panel(engine, latest, history, short)
    verdict = engine.balance()
    judged = verdict.mean if verdict.mean is not None else latest["ratio"]
    advice = rules.recommend_ratio(judged, th) if not math.isnan(judged) else None
    style = "green" if advice is None or advice.severity is None else SEVERITY_STYLE[advice.severity]
    body = label_grid(short)
    body.add_row(
        "ratio", Text(f"{number(latest['ratio'], 3)}  (pointer/type, healthy {th.balance_low}-{th.balance_high})")
    )
    body.add_row("window", Text(f"{number(verdict.mean, 3)} over {verdict.samples}/{th.window}", style=style))
    body.add_row("cosine", Text(number(latest.get("cosine"), 2)))
    if (weights := weights_text(history)) is not None:
        body.add_row("weights", text(weights))
    body.add_row("trend", Text(sparkline(list(history.ratios), 30, log=True), style="cyan"))
    body.add_row("verdict", Text(verdict.text, style=style))
    if advice is not None:
        body.add_row("action", Text(f"{advice.status}: {advice.action}", style=style))
    return Panel(body, title=f"Task balance (epoch {latest.get('epoch')})", border_style=style)


def tasks_panel(engine: rules.RuleEngine, latest: schema.Record, history: RunView, short: bool = False) -> Panel:
    """Any set of tasks: each task's weighted gradient norm and share of the update, and the verdict (``short``:
    each on one line, cut to the width)."""
    verdict = engine.balance()
    style = SEVERITY_STYLE["error"] if verdict.collapsed else "green"
    body = Table(box=None, padding=(0, 1), expand=True)
    # The numbers are never cut (a dominant task's 2.5e+04 must not read 2.…): the task name gives way.
    body.add_column("task", justify="left", no_wrap=short, overflow="ellipsis", ratio=1)
    for name in ("norm", "share"):
        body.add_column(name, justify="right", no_wrap=True, min_width=9 if name == "norm" else 6)
    shares = latest.get("shares") or {}
    for task, norm in latest["norms"].items():
        dominated = any(a.rule == rules.COLLAPSE and a.subject == task for a in engine.firing())
        body.add_row(
            text(task, SEVERITY_STYLE["error"] if dominated else ""), number(norm), number(shares.get(task), 2)
        )
    weights = weights_text(history)
    return Panel(
        Group(
            body,
            *([one_line(text(f"weights: {weights}"), short)] if weights else []),
            one_line(Text(verdict.text, style=style), short),
        ),
        title=f"Task balance, {len(latest['norms'])} tasks (epoch {latest.get('epoch')})",
        border_style=style,
    )


def layers_table(engine: rules.RuleEngine, options: ViewOptions, short: bool = False) -> RenderableType:
    """The latest measurement's layers, largest and smallest norms first, flagged as the layer rules flag them
    (a bias zero by construction is not vanishing); for a model whose record groups its tensors, the tensors it
    names (the extremes), which are what the rules judge. ``short``: a title and one line a layer, no rules."""
    stats = engine.last_grad_stats
    if stats is None:
        return Text("")
    norms = rules.judged_layer_norms(stats)
    flags = rules.flag_layers(norms, engine.thresholds)
    flagged = {
        **{name: ("vanishing", "yellow") for name in flags.vanishing},
        **{name: ("exploding", "bold red") for name in flags.exploding},
        **{name: ("NON-FINITE", "bold white on red") for name in flags.nonfinite},
    }
    names = [n for n in norms if options.layers is None or options.layers.search(n)]
    # A bias zero by construction is not one of the smallest worth a row (a transformer has one per attention
    # layer, and they would hide the flagged ones).
    structural = rules.zero_by_construction(norms, engine.thresholds).intersection(names)
    ordered = sorted(
        (n for n in names if n not in structural),
        key=lambda n: (math.isfinite(norms[n]), -norms[n] if math.isfinite(norms[n]) else 0),
    )
    shown = ordered[: options.top] + [n for n in ordered[-options.top :] if n not in ordered[: options.top]]
    groups = stats.get("layer_groups")
    tensors = groups.get("tensors") if isinstance(groups, dict) else None
    title = layers_title(len(shown), len(names), len(norms))
    if isinstance(tensors, int) and tensors > len(norms):  # the record names only the model's extremes
        title = f"Layers ({len(shown)} of the {len(names)} named of {tensors} tensors: the largest and smallest)"
    if structural:
        title += f"; {len(structural)} bias{'es' if len(structural) > 1 else ''} zero by construction not shown"
    if short:  # a short screen's lines are for the layers: no borders, no header (the columns speak for themselves)
        table = Table(title=one_line(Text(title, style="table.title")), title_justify="left", expand=True,
                      box=None, show_header=False)  # fmt: skip
    else:
        table = Table(title=title, title_justify="left", expand=True)
    table.add_column("layer", ratio=1, overflow="ellipsis" if short else "fold", no_wrap=short)
    table.add_column("norm", justify="right", no_wrap=True)
    table.add_column("flag", no_wrap=True)
    for name in shown:
        flag, style = flagged.get(name, ("", ""))
        table.add_row(text(name, style), Text(number(norms[name]), style=style), Text(flag, style=style))
    return table


def layers_title(shown: int, matching: int, total: int) -> str:
    """What the layer table holds: how many rows of how many layers, and which."""
    if shown == total:
        return f"Layers (all {total})"
    of = f"{matching} matching --layers, {total} in all" if matching < total else f"{total}"
    return f"Layers ({shown} of {of}: the largest and smallest norms)"


def panels_row(engine: rules.RuleEngine, history: RunView, short: bool = False, rows: int | None = None) -> Table:
    """The gradients and task balance panels side by side; ``short``: one line a row, and with ``rows``, at most
    that many of them (see :class:`Shortened`)."""
    panels = [gradients_panel(engine, history, short), balance_panel(engine, history, short)]
    row = Table.grid(expand=True, padding=(0, 1))
    row.add_column(ratio=1)
    row.add_column(ratio=1)
    row.add_row(*(panels if rows is None else (Shortened(panel, rows) for panel in panels)))
    return row


def run_dashboard(view: LogView, run: str, options: ViewOptions) -> RenderableType:
    """Everything about one run."""
    engine = view.scan.engines[run]
    history = view.runs.get(run, RunView())
    # Alerts come right after the header: on a short terminal they are what must stay visible.
    return Group(
        header_panel(view, run, options),
        alerts_table([(run, alert) for alert in engine.alerts], limit=FULL_ALERTS),
        panels_row(engine, history),
        layers_table(engine, options),
    )


FULL_ALERTS = 8  # alerts the whole dashboard's table shows
MIN_PANEL_ROWS = 3  # a panel's rows that come before the layer table gets any


@dataclass(frozen=True)
class Shortened:
    """``panel`` showing at most ``rows`` lines of its body; its bottom border says how many it leaves out."""

    panel: Panel
    rows: int

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        body = len(console.render_lines(self.panel, options.reset_height(), pad=False)) - 2  # less its borders
        if body <= self.rows:
            yield self.panel
            return
        short = copy.copy(self.panel)
        short.height = self.rows + 2  # a Panel crops its body to its height
        short.subtitle = Text(f"{body - self.rows} more rows", style="dim")
        yield short


def alert_lines(alerts: Sequence[tuple[str, rules.Alert]], shown: int, advised: int = 0) -> Table:
    """The first ``shown`` alerts in :func:`ordered_alerts`' order, one line each: severity, rule, subject and the
    message cut to the width (a pending or resolved alert, dimmed, says so first); the first ``advised`` with their
    recommendation on a line of its own; ``none`` when there is no alert."""
    table = Table(title="Alerts", title_justify="left", expand=True, box=None, show_header=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("rule", no_wrap=True)
    table.add_column("subject", no_wrap=True, max_width=24)  # a task's name, from the log: any length
    table.add_column("message", ratio=1, no_wrap=True)
    for index, (_, alert) in enumerate(ordered_alerts(alerts)[:shown]):
        if alert.state == rules.FIRING:
            severity, muted, message = SEVERITY_STYLE[alert.severity], "", text(alert.message)
        else:
            when = f" at {where(alert.resolved_epoch, alert.resolved_step)}" if alert.state == rules.RESOLVED else ""
            severity, muted, message = "dim", "dim", text(f"{alert.state}{when}: {alert.message}", "dim")
        if index < advised:
            message.append("\n→ ", style="dim")
            message.append_text(text(alert.recommendation, "italic"))
        row = Text(alert.severity, style=severity), text(alert.rule, muted), text(alert.subject, muted), message
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

    def whole(self) -> Fit:
        """All of every part; recommendations only fill what room is left, never missed."""
        return Fit(self.alerts, self.panel_rows, len(self.layers))

    def advised(self, fit: Fit) -> int:
        """The recommendations ``fit`` shows: only a firing alert's, and only under its line."""
        return min(fit.advised, fit.alerts, self.firing)

    def height(self, fit: Fit) -> int:
        """Lines taken by what ``fit`` shows: each part's title or borders with its lines."""
        alerts = 2 if not self.alerts else 1 + fit.alerts + self.advised(fit) if fit.alerts else 0  # "none" shows
        panels = fit.panel_rows + 2 if fit.panel_rows else 0
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
        missing.append(f"{hidden} more alert{'s' if hidden > 1 else ''}{firing}")
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
        lines = self.fitted(lambda part: console.render_lines(part, unbounded, pad=False), options.max_height)
        for line in lines:
            yield from line
            yield Segment.line()

    def fitted(self, render: Callable[[RenderableType], list[list[Segment]]], height: int) -> list[list[Segment]]:
        """The lines that fit ``height``, each part rendered by ``render``."""
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
        return self.short(render, height)

    def short(self, render: Callable[[RenderableType], list[list[Segment]]], height: int) -> list[list[Segment]]:
        """The short dashboard's lines for ``height`` (see :func:`fit_short`)."""
        engine, history = self.engine, self.history
        alerts = [(self.run, alert) for alert in engine.alerts]
        head = render(header_panel(self.view, self.run, self.options, short=True))
        panels = render(panels_row(engine, history, short=True))
        tables = [render(layers_table(engine, replace(self.options, top=ends), short=True))
                  for ends in range(1, self.options.top + 1)] if engine.last_grad_stats else []  # fmt: skip
        parts = Parts(len(engine.firing()), len(alerts), len(panels) - 2, tuple(len(table) for table in tables))
        fit = fit_short(height - len(head), parts)
        lines = head
        if fit.alerts or not alerts:
            lines += render(alert_lines(alerts, fit.alerts, parts.advised(fit)))
        if fit.panel_rows:
            cut = fit.panel_rows < parts.panel_rows
            lines += render(panels_row(engine, history, short=True, rows=fit.panel_rows)) if cut else panels
        if fit.layer_ends:
            lines += tables[fit.layer_ends - 1]
        if missing := left_out(parts, fit):
            lines += render(left_out_line(missing))
        return lines


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
                "last record": Text(_age(view.writer_now(run, self.options.now), engine.run.last_time)),
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
