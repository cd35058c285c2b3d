"""Rich renderables of an offline report (``moola-watch analyze``): one per concept."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from moola_watch import rules
from moola_watch.analyze import LogScan, window_means, worst_layers
from moola_watch.render import (
    STATUS_STYLE,
    VERDICT_STYLE,
    alerts_table,
    number,
    sparkline,
    text,
    where,
)

TREND_ROWS = 12  # rows of a trend table; longer histories are sampled evenly, keeping the last


def _sampled(frame: pd.DataFrame, rows: int = TREND_ROWS, keep: pd.Series | None = None) -> pd.DataFrame:
    """At most about ``rows`` rows, evenly spaced with the first and the last; the first ``rows`` rows where
    ``keep`` is True are always among them (a NaN step must not fall between two shown ones)."""
    if len(frame) <= rows:
        return frame
    positions = {round(i * (len(frame) - 1) / (rows - 1)) for i in range(rows)}
    if keep is not None:
        positions.update(np.flatnonzero(keep.to_numpy(bool))[:rows].tolist())
    return frame.iloc[sorted(positions)]


def count(value: object) -> str:
    """An epoch or step for a table: the whole number, ``-`` when the record had none."""
    return "-" if value is None or pd.isna(value) else str(int(value))  # type: ignore[call-overload]


def _runs_shown(frame: pd.DataFrame) -> bool:
    """Whether a trend table needs a run column: its rows come from more than one run of the log."""
    return "run" in frame and frame["run"].nunique() > 1


def _position_columns(table: Table, with_run: bool) -> None:
    if with_run:
        table.add_column("run", no_wrap=True, max_width=20, overflow="ellipsis")
    for name in ("epoch", "step"):
        table.add_column(name, justify="right", no_wrap=True)


def _position_cells(values: dict[str, object], with_run: bool) -> list[str | Text]:
    return [*([text(values["run"])] if with_run else []), count(values["epoch"]), count(values["step"])]


def run_table(scan: LogScan) -> Table:
    verdict = scan.verdict()
    table = Table(title=Text(f"Log {scan.path}"), title_justify="left", show_header=False, expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    table.add_row("verdict", Text(verdict, style=VERDICT_STYLE.get(verdict, "")))
    for run, engine in scan.engines.items():
        state = engine.run_status
        line = text(f"{run}  ")
        line.append(state, style=STATUS_STYLE.get(state, ""))
        table.add_row("run", line)
        table.add_row("", text(f"model {engine.run.model or '?'}, at {where(engine.run.epoch, engine.run.step)}"))
        if engine.run.error:
            table.add_row("", text(f"error: {engine.run.error}", "red"))
    bad = f"{scan.bad_lines} skipped"
    if scan.bad_by_category:
        bad += " (" + ", ".join(f"{count} {kind}" for kind, count in scan.bad_by_category.most_common()) + ")"
    table.add_row("records", Text(f"{scan.records} read, {bad}"))
    for detail in scan.bad_details[:3]:
        table.add_row("", text(f"line {detail.line_no}: {detail.rejected.reason}", "dim"))
    return table


def gradient_trend(grad: pd.DataFrame) -> RenderableType:
    if grad.empty:
        return Text("No gradient statistics in this log.", style="dim")
    table = Table(title="Gradient norms", title_justify="left", expand=True)
    with_run = _runs_shown(grad)
    _position_columns(table, with_run)
    for name in ("mean", "max", "total", "non-finite"):
        table.add_column(name, justify="right")
    for row in _sampled(grad, keep=grad["nonfinite_count"] > 0).itertuples(index=False):
        level = rules.classify_norm_level(row.mean_norm) if math.isfinite(row.mean_norm) else None
        style = "red" if row.nonfinite_count else ("yellow" if level and level.severity else "")
        table.add_row(
            *_position_cells(row._asdict(), with_run),
            Text(number(row.mean_norm), style=style),
            number(row.max_norm),
            number(row.total_norm),
            Text(str(row.nonfinite_count), style="red" if row.nonfinite_count else "dim"),
        )
    table.caption = f"mean norm trend (log scale): {sparkline(grad['mean_norm'].tolist(), 40, log=True)}"
    return table


def layers_table(layers: pd.DataFrame, thresholds: rules.Thresholds, top: int = 8) -> RenderableType:
    if layers.empty:
        return Text("No per-layer norms in this log.", style="dim")
    largest, smallest = worst_layers(layers, top, thresholds)
    any_nonfinite = bool(largest["nonfinite"].any() or smallest["nonfinite"].any())
    table = Table(title="Worst layers", title_justify="left", expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("layer", ratio=1, overflow="fold")
    for name in ("last", "peak", "lowest", *(["nan/inf"] if any_nonfinite else [])):
        table.add_column(name, justify="right", no_wrap=True)  # a number is never broken over two lines
    for label, frame in (("largest", largest), ("smallest", smallest)):
        for row in frame.itertuples():
            flag = ""
            if row.nonfinite:
                flag = "bold white on red"
            elif row.peak > thresholds.exploding:
                flag = "bold red"
            elif row.lowest < thresholds.vanishing:
                flag = "yellow"
            cells = [number(row.last), number(row.peak), number(row.lowest)]
            table.add_row(label, text(row.layer, flag), *cells, *([str(row.nonfinite)] if any_nonfinite else []))
            label = ""
    return table


def weights_cells(frame: pd.DataFrame) -> list[str] | None:
    """Each row's task loss weights (``type 1 pointer 50``), or None when they never change in ``frame``."""
    columns = [column for column in frame.columns if column.startswith("weight_")]
    if not columns or len(frame[columns].drop_duplicates()) < 2:
        return None
    return [
        " ".join(f"{column[len('weight_') :]} {number(row[column], 3)}" for column in columns if pd.notna(row[column]))
        for _, row in frame[columns].iterrows()
    ]


def balance_trend(balance: pd.DataFrame, thresholds: rules.Thresholds) -> RenderableType:
    if balance.empty:
        return Text("No task-balance samples in this log (single-task run?).", style="dim")
    if "ratio" not in balance or balance["ratio"].isna().all():
        return tasks_trend(balance)
    frame = _sampled(balance.assign(window_mean=window_means(balance["ratio"].tolist(), thresholds)))
    weights = weights_cells(frame)
    table = Table(title="Task balance (pointer/type)", title_justify="left", expand=True)
    with_run = _runs_shown(frame)
    _position_columns(table, with_run)
    for name in ("ratio", "window mean", "cosine", *(["loss weights"] if weights else [])):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status", ratio=1)
    actions: dict[str, str] = {}  # each status's action, told once under the table rather than on every row
    for index, row in enumerate(frame.itertuples(index=False)):
        advice = rules.recommend_ratio(row.ratio, thresholds) if not math.isnan(row.ratio) else None
        style = "" if advice is None or advice.severity is None else rules_style(advice.severity)
        table.add_row(
            *_position_cells(row._asdict(), with_run),
            Text(number(row.ratio, 3), style=style),
            number(None if pd.isna(row.window_mean) else row.window_mean, 3),
            number(getattr(row, "cosine", None), 2),
            *([weights[index]] if weights else []),
            Text(advice.status if advice else "-", style=style),
        )
        if advice is not None and advice.severity is not None:
            actions[advice.status] = advice.action
    band = f"healthy {thresholds.balance_low}-{thresholds.balance_high}"
    caption = [f"ratio trend (log scale, {band}): {sparkline(frame['ratio'].tolist(), 40, log=True)}"]
    caption += [f"{status} → {action}" for status, action in actions.items()]
    table.caption = "\n".join(caption)
    return table


def tasks_trend(balance: pd.DataFrame) -> Table:
    """Any set of tasks: each task's gradient norm and share of the update over time."""
    tasks = [column[len("norm_") :] for column in balance.columns if column.startswith("norm_")]
    table = Table(title=f"Task balance, {len(tasks)} tasks (gradient norm / share of the update)", title_justify="left")
    frame = _sampled(balance)
    weights = weights_cells(frame)
    with_run = _runs_shown(frame)
    _position_columns(table, with_run)
    for name in (*tasks, *(["loss weights"] if weights else [])):
        table.add_column(text(name), justify="right")
    # Records as dicts: itertuples would rename a column that is no identifier (a task called "cls-head").
    for index, values in enumerate(frame.to_dict("records")):
        cells = [f"{number(values[f'norm_{t}'])} / {number(values.get(f'share_{t}'), 2)}" for t in tasks]
        table.add_row(*_position_cells(values, with_run), *cells, *([weights[index]] if weights else []))
    return table


def rules_style(severity: str) -> str:
    return "red" if severity == "error" else "yellow"


def summary_text(scan: LogScan) -> Text:
    current = scan.current
    if current is None:
        return Text("No records.", style="dim")
    return Text("\n").join(text(line) for line in current.summary().lines())


def analyze_report(scan: LogScan, frames: dict[str, pd.DataFrame]) -> Group:
    """The whole report of one log."""
    return Group(
        run_table(scan),
        gradient_trend(frames["grad"]),
        layers_table(frames["layers"], scan.thresholds),
        balance_trend(frames["balance"], scan.thresholds),
        alerts_table(scan.alerts(), show_run=len(scan.engines) > 1),
        summary_text(scan),
    )
