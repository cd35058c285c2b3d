"""One run's whole dashboard (:func:`run_dashboard`) and the parts it is made of: the header, the gradients and
task balance panels, the layer table; each drawn whole, or ``short`` (one line a row) for :mod:`.fitted`."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moola_watch import rules, schema
from moola_watch.counts import counted
from moola_watch.dashboard.state import LogView, RunView, ViewOptions
from moola_watch.dashboard.summary import ago, verdict_text
from moola_watch.dotted_name import DottedName
from moola_watch.render import SEVERITY_STYLE, STATUS_STYLE, alerts_table, number, sparkline, text, where


def _at(record: schema.Record) -> str:
    """Where a panel's record was taken: its epoch, else its step ('-' when neither is recorded)."""
    epoch = record.get("epoch")
    return f"epoch {epoch}" if epoch is not None else where(None, record.get("step"))


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
        first.append(
            f" ({runs.index(run) + 1} of {counted(len(runs), 'run')} in this log; --run ID for another)", style="dim"
        )
    first.append("  ")
    first.append(f" {status.upper()} ", style=STATUS_STYLE.get(status, "") + " reverse")
    first.append("  verdict: ")
    first.append_text(verdict)
    second = text(f"model {engine.run.model or '?'}   ")
    age = ago(view.writer_now(run, options.now), engine.run.last_time)
    second.append(
        f"{where(engine.run.epoch, engine.run.step)}   {counted(engine.run.records, 'record')}, "
        f"{counted(view.scan.bad_lines, 'bad line')} skipped   last record {age}"
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
    return Panel(body, title=f"Gradients ({_at(stats)})", border_style=style or "green")


def balance_panel(engine: rules.RuleEngine, history: RunView, short: bool = False) -> Panel:
    latest = engine.last_balance
    th = engine.thresholds
    if latest is None:
        return Panel(
            Text("no task-balance samples yet (one task, or tasks never in one batch together?)", style="dim"),
            title="Task balance",
        )
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
    return Panel(body, title=f"Task balance ({_at(latest)})", border_style=style)


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
        title=f"Task balance, {counted(len(latest['norms']), 'task')} ({_at(latest)})",
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
    flags = rules.flag_layers(norms, engine.thresholds, complete=rules.names_every_weight(stats))
    flagged = {
        **{name: ("vanishing", "yellow") for name in flags.vanishing},
        **{name: ("exploding", "bold red") for name in flags.exploding},
        **{name: ("NON-FINITE", "bold white on red") for name in flags.nonfinite},
    }
    names = [n for n in norms if options.layers is None or options.layers.search(n)]
    # A bias zero by construction is not one of the smallest worth a row (a transformer has one per attention
    # layer, and they would hide the flagged ones).
    structural = rules.zero_by_construction(norms, engine.thresholds, complete=rules.names_every_weight(stats))
    structural = structural.intersection(names)
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
        what = "bias" if all(map(rules.is_bias, structural)) else "tensor"
        many = "es" if what == "bias" else "s"
        title += f"; {len(structural)} {what}{many if len(structural) > 1 else ''} zero by construction not shown"
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
        name_cell = text(name, style)
        table.add_row(name_cell if short else DottedName(name_cell), Text(number(norms[name]), style=style),
                      Text(flag, style=style))  # fmt: skip
    return table


def layers_title(shown: int, matching: int, total: int) -> str:
    """What the layer table holds: how many rows of how many layers, and which."""
    if shown == total:
        return f"Layers (all {total})"
    of = f"{matching} matching --layers, {total} in all" if matching < total else f"{total}"
    return f"Layers ({shown} of {of}: the largest and smallest norms)"


#: The narrowest terminal (cells) with the gradients and balance panels side by side; narrower, one above the
#: other (side by side at 60 columns, task names were cut to their first two letters).
SIDE_BY_SIDE_WIDTH = 80


def panels_row(engine: rules.RuleEngine, history: RunView, short: bool = False, rows: int | None = None) -> PanelsRow:
    """The gradients and task balance panels; ``short``: one line a row, and with ``rows``, at most that many of
    them (see :class:`Shortened`)."""
    panels = [gradients_panel(engine, history, short), balance_panel(engine, history, short)]
    return PanelsRow(tuple(panels if rows is None else (Shortened(panel, rows) for panel in panels)))


@dataclass(frozen=True)
class PanelsRow:
    """``panels`` side by side from ``SIDE_BY_SIDE_WIDTH`` cells, else one above the other."""

    panels: tuple[RenderableType, ...]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width < SIDE_BY_SIDE_WIDTH:
            yield Group(*self.panels)
            return
        row = Table.grid(expand=True, padding=(0, 1))
        for _panel in self.panels:
            row.add_column(ratio=1)
        row.add_row(*self.panels)
        yield row


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
        short.subtitle = Text(counted(body - self.rows, "more row"), style="dim")
        yield short
