"""Rich renderables of an offline report (``moola-watch analyze``): one per concept.

Every table fits the console it is printed on (80 columns is a CI job's default): a number is never cut or
ellipsized. Columns of numbers keep their width; text (run ids, layer names, messages) folds; where even that
does not fit, the least needed columns are left out, and the caption says which
(:class:`~moola_watch.fitted_table.FittedTable`). A log
of several runs has a run column in every table, showing each run id by the part that tells it from the
others (:func:`~moola_watch.render.run_labels`), and one trend line per run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from moola_watch import rules
from moola_watch.analyze import LogScan, most_telling, run_verdict, window_means, worst_layers
from moola_watch.counts import counted
from moola_watch.dotted_name import DottedName
from moola_watch.fitted_table import Choice, Column, FittedTable, cell_width
from moola_watch.render import (
    ALERT_TEXT,
    RUN_LABEL_WIDTH,
    SEVERITY_STYLE,
    STATUS_STYLE,
    VERDICT_STYLE,
    number,
    ordered_alerts,
    run_labels,
    severity_text,
    sparkline,
    text,
    where,
)
from moola_watch.textsafe import inert

TREND_ROWS = 12  # rows of a trend table; longer histories are sampled evenly, keeping the last
MAX_RUNS_SHOWN = 10  # runs given their own trend line and worst layers (the worst verdicts first)
TOP_LAYERS = 8  # worst layers of each kind shown for a log of one run
SPARK_WIDTH = 40
LAYER_FLOOR = 16  # a layer name up to this long is never folded
RULE_FLOOR = 16  # nor a rule's subject (a layer, a task pair)
MESSAGE_FLOOR = 30  # an alert's message keeps at least this many columns


def _sampled(frame: pd.DataFrame, rows: int = TREND_ROWS, keep: pd.Series | None = None) -> pd.DataFrame:
    """At most about ``rows`` rows, evenly spaced with the first and the last; the first ``rows`` rows where
    ``keep`` is True are always among them (a NaN step must not fall between two shown ones)."""
    if len(frame) <= rows:
        return frame
    positions = {round(i * (len(frame) - 1) / (rows - 1)) for i in range(rows)}
    if keep is not None:
        positions.update(np.flatnonzero(keep.to_numpy(bool))[:rows].tolist())
    return frame.iloc[sorted(positions)]


def sampled_title(title: str, shown: pd.DataFrame, whole: pd.DataFrame, what: str) -> str:
    """``title``, and how many of the ``whole`` rows are ``shown`` where not all (a reader must not take 12 rows
    for the whole run): ``what`` names a row ("record", "sample")."""
    if len(shown) == len(whole):
        return title
    return f"{title}: {len(shown)} of {counted(len(whole), what)}, evenly spaced (analyze --csv DIR has all)"


def count(value: object) -> str:
    """An epoch or step for a table: the whole number, ``-`` when the record had none."""
    return "-" if value is None or pd.isna(value) else str(int(value))  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------------ runs


def runs_shown(scan: LogScan, limit: int = MAX_RUNS_SHOWN) -> list[str]:
    """The runs given a line or block of their own, in log order: all of them, or the ``limit`` with the worst
    verdicts (the latest first among equals)."""
    return most_telling(list(scan.engines), lambda run: run_verdict(scan.engines[run]), limit)


def _run_label(labels: Mapping[str, str], run: object) -> str:
    return labels.get(str(run), str(run))


def _positions(frame: pd.DataFrame, labels: Mapping[str, str] | None) -> list[Column]:
    """The run (when the table holds several), epoch and step columns of a trend table's rows. The epoch goes
    first when the table is too narrow, if the rows have steps."""
    columns = []
    if labels is not None:
        columns.append(_run_column([_run_label(labels, run) for run in frame["run"]]))
    has_steps = "step" in frame and bool(frame["step"].notna().any())
    columns.append(
        Column("epoch", [count(v) for v in frame["epoch"]], number=True, drop=9 if has_steps else 0, justify="right")
    )
    columns.append(Column("step", [count(v) for v in frame["step"]], number=True, justify="right"))
    return columns


def _run_column(labels: Sequence[str], header: str = "run") -> Column:
    """Run labels, kept whole where they are at most :data:`RUN_LABEL_WIDTH` wide (longer ones fold)."""
    return Column(
        header, [text(label) for label in labels], floor=min(RUN_LABEL_WIDTH, max(map(cell_len, labels), default=0))
    )


def _labels_if_several(frame: pd.DataFrame, labels: Mapping[str, str]) -> Mapping[str, str] | None:
    """``labels`` if ``frame``'s rows come from more than one run (a run column is needed), else None."""
    return labels if "run" in frame and frame["run"].nunique() > 1 else None


def _trend_lines(
    frame: pd.DataFrame, column: str, title: str, labels: Mapping[str, str], runs: Sequence[str]
) -> list[Text]:
    """A log-scale sparkline of ``column``'s last values: one line for one run, else one per run shown (each
    run's own values: the runs never run together), then how many runs were not shown."""
    if "run" not in frame or frame["run"].nunique() < 2:
        return [Text(f"{title}: {sparkline(frame[column].tolist(), SPARK_WIDTH, log=True)}")]
    by_run = {str(run): values for run, values in frame.groupby("run", observed=True, sort=False)[column]}
    shown = [run for run in runs if run in by_run]
    width = max(cell_len(_run_label(labels, run)) for run in shown) if shown else 0
    lines = [Text(f"{title}, per run:")]
    for run in shown:
        line = text(_run_label(labels, run).ljust(width) + "  ")
        line.append(sparkline(by_run[run].tolist(), SPARK_WIDTH, log=True))
        lines.append(line)
    if len(by_run) > len(shown):
        lines.append(Text(f"({len(by_run) - len(shown)} more runs not shown)", style="dim"))
    return lines


# ------------------------------------------------------------------------------------------------ tables


def run_table(scan: LogScan, labels: Mapping[str, str] | None = None) -> Table:
    verdict = scan.verdict()
    labels = labels or {}
    table = Table(title=text(f"Log {scan.path}"), title_justify="left", show_header=False, expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1, overflow="fold")
    table.add_row("verdict", Text(verdict, style=VERDICT_STYLE.get(verdict, "")))
    for run, engine in scan.engines.items():
        state = engine.run_status
        line = text(f"{run}  ")
        line.append(state, style=STATUS_STYLE.get(state, ""))
        if labels.get(run, run) != run:
            line.append(f"  (shown as {inert(labels[run])})", style="dim")
        table.add_row("run", line)
        table.add_row("", text(f"model {engine.run.model or '?'}, at {where(engine.run.epoch, engine.run.step)}"))
        table.add_row("", text(f"thresholds: {scan.threshold_sources[run]}", "dim"))  # as check says
        if engine.run.error:
            table.add_row("", text(f"error: {engine.run.error}", "red"))
    bad = f"{scan.bad_lines} skipped"
    if scan.bad_by_category:
        bad += " (" + ", ".join(f"{count} {kind}" for kind, count in scan.bad_by_category.most_common()) + ")"
    table.add_row("records", Text(f"{scan.records} read, {bad}"))
    for detail in scan.bad_details[:3]:
        table.add_row("", text(f"line {detail.line_no}: {detail.rejected.reason}", "dim"))
    return table


def gradient_trend(
    grad: pd.DataFrame, labels: Mapping[str, str] | None = None, runs: Sequence[str] | None = None
) -> RenderableType:
    if grad.empty:
        return Text("No gradient statistics in this log.", style="dim")
    labels = labels or {}
    frame = _sampled(grad, keep=grad["nonfinite_count"] > 0)
    styles = []
    for mean, nonfinite in zip(frame["mean_norm"], frame["nonfinite_count"], strict=True):
        level = rules.classify_norm_level(mean) if math.isfinite(mean) else None
        styles.append("red" if nonfinite else ("yellow" if level and level.severity else ""))
    columns = [
        *_positions(frame, _labels_if_several(frame, labels)),
        Column(
            "mean",
            [Text(number(v), style=s) for v, s in zip(frame["mean_norm"], styles, strict=True)],
            number=True,
            justify="right",
        ),
        Column("max", [number(v) for v in frame["max_norm"]], number=True, justify="right"),
        Column("total", [number(v) for v in frame["total_norm"]], number=True, drop=5, justify="right"),
        Column(
            "nan/inf",
            [Text(str(v), style="red" if v else "dim") for v in frame["nonfinite_count"]],
            number=True,
            justify="right",
        ),
    ]
    caption = _trend_lines(
        grad, "mean_norm", "mean norm trend (log scale)", labels, runs or list(map(str, grad["run"].unique()))
    )
    return FittedTable(sampled_title("Gradient norms", frame, grad, "record"), columns, caption)


def layers_table(
    layers: pd.DataFrame,
    thresholds: rules.Thresholds,
    top: int = TOP_LAYERS,
    labels: Mapping[str, str] | None = None,
    runs: Sequence[str] | None = None,
) -> RenderableType:
    """Each run's layers with the highest peak and the lowest minimum (see :func:`worst_layers`); with a run
    column, each run a section, when the log holds several. Short of room, the layer names keep their floor:
    the last norms go first, then peak and lowest stack in one column."""
    if layers.empty:
        return Text("No per-layer norms in this log.", style="dim")
    labels = labels or {}
    several = "run" in layers and layers["run"].nunique() > 1
    every = list(map(str, pd.unique(layers["run"]))) if "run" in layers else []
    shown = [run for run in (runs or every) if run in set(every)] if several else every
    if several:
        top = max(3, top // len(shown))
        layers = layers[layers["run"].isin(shown)]
    largest, smallest = worst_layers(layers, top, thresholds)
    any_nonfinite = bool(largest["nonfinite"].any() or smallest["nonfinite"].any())
    # A big model's samples name only their extreme tensors: a tensor named in few has few values behind its norms
    partly_seen = bool((largest["seen"] < largest["samples"]).any() or (smallest["seen"] < smallest["samples"]).any())
    cells: dict[str, list[RenderableType]] = {
        name: [] for name in ("run", "", "layer", "last", "peak", "lowest", "seen")
    }
    cells["nan/inf"] = []
    sections: set[int] = set()
    for run in shown if several else [None]:
        first = True
        for label, frame in (("largest", largest), ("smallest", smallest)):
            rows = frame[frame["run"] == run] if several else frame
            for row in rows.itertuples():
                flag = ""
                if row.nonfinite:
                    flag = "bold white on red"
                elif row.peak > thresholds.exploding:
                    flag = "bold red"
                elif row.lowest < thresholds.vanishing:
                    flag = "yellow"
                cells["run"].append(text(_run_label(labels, run)) if first else Text(""))
                cells[""].append(label)
                cells["layer"].append(DottedName(text(row.layer, flag)))
                cells["last"].append(number(row.last))
                cells["peak"].append(number(row.peak))
                cells["lowest"].append(number(row.lowest))
                cells["nan/inf"].append(str(row.nonfinite))
                cells["seen"].append(f"{row.seen}/{row.samples}")
                first, label = False, ""
        sections.add(len(cells["layer"]) - 1)
    run_floor = min(RUN_LABEL_WIDTH, max(map(cell_width, cells["run"]), default=0))
    run = [Column("run", cells["run"], floor=run_floor)] if several else []
    layer = Column("layer", cells["layer"], floor=LAYER_FLOOR)  # a longer name breaks after a dot if short of room
    last = Column("last", cells["last"], number=True, drop=2, justify="right")  # the least needed: it goes first
    nonfinite = [Column("nan/inf", cells["nan/inf"], number=True, justify="right")] if any_nonfinite else []
    peak, lowest = (Column(name, cells[name], number=True, justify="right") for name in ("peak", "lowest"))
    seen = [Column("seen", cells["seen"], number=True, justify="right", drop=1)] if partly_seen else []
    caption = []
    if partly_seen:
        caption.append(Text("seen: the samples that named the tensor (each names only its model's extreme tensors); "
                            "last, peak and lowest are over those", style="dim"))  # fmt: skip
    if several and len(shown) < len(every):
        caption.append(
            Text(f"{len(every) - len(shown)} more runs not shown (analyze --json lists every run's)", style="dim")
        )
    wide = FittedTable("Worst layers", [*run, Column("", cells[""], number=True), layer, last, peak, lowest,
                                        *nonfinite, *seen], caption, sections)  # fmt: skip
    # Where even without last the names get too little room (under 55 columns, 65 with nan/inf): peak over
    # lowest in one column, the halves called max and min, and nan/inf left out if still short of room.
    short = [{"largest": "max", "smallest": "min"}.get(label, label) for label in cells[""]]
    stacked = [f"{high}\n{low}" for high, low in zip(cells["peak"], cells["lowest"], strict=True)]
    narrow = FittedTable("Worst layers", [*run, Column("", short, number=True), layer,
                                          Column("peak\nlowest", stacked, number=True, justify="right"),
                                          *(replace(column, drop=1) for column in nonfinite)], caption,
                         sections, left_out=("last", *(column.header for column in seen)))  # fmt: skip
    return Choice([wide, narrow])


def weights_cells(frame: pd.DataFrame) -> list[str] | None:
    """Each row's task loss weights (``type 1 pointer 50``), or None when they never change in ``frame``."""
    columns = [column for column in frame.columns if column.startswith("weight_")]
    if not columns or len(frame[columns].drop_duplicates()) < 2:
        return None
    return [
        " ".join(f"{column[len('weight_') :]} {number(row[column], 3)}" for column in columns if pd.notna(row[column]))
        for _, row in frame[columns].iterrows()
    ]


def balance_trend(
    balance: pd.DataFrame,
    thresholds: rules.Thresholds,
    labels: Mapping[str, str] | None = None,
    runs: Sequence[str] | None = None,
) -> RenderableType:
    if balance.empty:
        return Text(
            "No task-balance samples in this log (one task, or tasks never in one batch together?).", style="dim"
        )
    if "ratio" not in balance or balance["ratio"].isna().all():
        return tasks_trend(balance, labels)
    labels = labels or {}
    frame = _sampled(balance.assign(window_mean=_window_means_per_run(balance, thresholds)))
    weights = weights_cells(frame)
    ratio_cells, statuses = [], []
    actions: dict[str, str] = {}  # each status's action, told once under the table rather than on every row
    for ratio in frame["ratio"]:
        advice = rules.recommend_ratio(ratio, thresholds) if not math.isnan(ratio) else None
        style = "" if advice is None or advice.severity is None else rules_style(advice.severity)
        ratio_cells.append(Text(number(ratio, 3), style=style))
        statuses.append(Text(advice.status if advice else "-", style=style))
        if advice is not None and advice.severity is not None:
            actions[advice.status] = advice.action
    cosines = frame["cosine"] if "cosine" in frame else [None] * len(frame)
    columns = [
        *_positions(frame, _labels_if_several(frame, labels)),
        Column("ratio", ratio_cells, number=True, justify="right"),
        Column(
            "window mean",
            [number(None if pd.isna(v) else v, 3) for v in frame["window_mean"]],
            number=True,
            drop=7,
            justify="right",
            narrow_header="window\nmean",
        ),
        Column(
            "cosine",
            [number(None if v is None or pd.isna(v) else v, 2) for v in cosines],
            number=True,
            drop=8,
            justify="right",
        ),
        *([Column("loss weights", list(weights), justify="right")] if weights else []),
        Column("status", statuses),
    ]
    band = f"healthy {thresholds.balance_low}-{thresholds.balance_high}"
    caption = _trend_lines(
        balance, "ratio", f"ratio trend (log scale, {band})", labels, runs or list(map(str, balance["run"].unique()))
    )
    caption += [Text(f"{status} → {action}") for status, action in actions.items()]
    return FittedTable(sampled_title("Task balance (pointer/type)", frame, balance, "sample"), columns, caption)


def _window_means_per_run(balance: pd.DataFrame, thresholds: rules.Thresholds) -> list[float | None]:
    """The collapse window's mean after each balance sample, each run's window its own (a run's first samples
    never average in the run before it)."""
    if "run" not in balance:
        return window_means(balance["ratio"].tolist(), thresholds)
    means: dict[int, float | None] = {}
    for _run, ratios in balance.reset_index(drop=True).groupby("run", observed=True, sort=False)["ratio"]:
        means.update(zip(ratios.index, window_means(ratios.tolist(), thresholds), strict=True))
    return [means[position] for position in range(len(balance))]


def tasks_trend(balance: pd.DataFrame, labels: Mapping[str, str] | None = None) -> RenderableType:
    """Any set of tasks: each task's gradient norm and share of the update over time."""
    tasks = [column[len("norm_") :] for column in balance.columns if column.startswith("norm_")]
    frame = _sampled(balance)
    weights = weights_cells(frame)
    # Records as dicts: itertuples would rename a column that is no identifier (a task called "cls-head").
    rows = frame.to_dict("records")
    columns = [
        *_positions(frame, _labels_if_several(frame, labels or {})),
        *(_task_column(task, rows) for task in tasks),
        *([Column("loss weights", list(weights), justify="right")] if weights else []),
    ]
    title = f"Task balance, {counted(len(tasks), 'task')} (gradient norm / share of the update)"
    return FittedTable(sampled_title(title, frame, balance, "sample"), columns)


def _task_column(task: str, rows: list[dict]) -> Column:
    """A task's ``norm / share`` cells; where the table is short of room, each number on a line of its own."""
    pairs = [(number(row[f"norm_{task}"]), number(row.get(f"share_{task}"), 2)) for row in rows]
    return Column(
        inert(task),
        [f"{norm} / {share}" for norm, share in pairs],
        justify="right",
        narrow_cells=[f"{norm}\n/ {share}" for norm, share in pairs],
    )


def rules_style(severity: str) -> str:
    return "red" if severity == "error" else "yellow"


def alerts_view(
    alerts: Sequence[tuple[str, rules.Alert]], labels: Mapping[str, str] | None = None, *, limit: int = 50
) -> RenderableType:
    """Alerts in :func:`~moola_watch.render.ordered_alerts`' order, each with when it began and what to do; a
    run column when ``labels`` is given (several runs). Every firing alert is shown; ``limit`` caps the rows
    only as far as pending and resolved ones fill them. Where the columns leave the message too little room
    (a run column at 80 columns), state, rule, start and value stack in one column beside it."""
    ordered = ordered_alerts(alerts)
    limit = max(limit, sum(1 for _run, alert in alerts if alert.state == rules.FIRING))
    rows = ordered[:limit]
    caption = (
        [Text(f"{len(ordered) - limit} more not shown (pending or resolved)", style="dim")] if rows != ordered else []
    )
    run_column = [_run_column([_run_label(labels, run) for run, _ in rows])] if labels is not None else []
    states, rule_cells, since, values, details, stacked = [], [], [], [], [], []
    for _run, alert in rows:
        state = Text(alert.state, style=SEVERITY_STYLE[alert.severity] if alert.state == rules.FIRING else "dim")
        severity = severity_text(alert.severity)
        detail = Text(inert(alert.message, limit=ALERT_TEXT))
        detail.append("\n→ ", style="dim")
        detail.append(inert(alert.recommendation, limit=ALERT_TEXT), style="italic")
        if alert.state == rules.RESOLVED:
            detail.append(f"  (resolved at {where(alert.resolved_epoch, alert.resolved_step)})", style="dim")
        begun = where(alert.first_epoch, alert.first_step)
        states.append(Text("\n").join([state, severity]))
        rule_cells.append(Text("\n").join([text(alert.rule), text(alert.subject)]))
        since.append(Text(begun.replace(", ", "\n")))
        values.append(number(alert.value))
        details.append(detail)
        summary = Text("\n").join(
            [
                Text(" ").join([state, severity]),
                text(alert.rule),
                text(alert.subject),
                Text(f"since {begun}"),
                Text(f"value {number(alert.value)}"),
            ]
        )
        stacked.append(summary)
    if not rows:
        return FittedTable("Alerts", [Column("", [Text("none", style="green")])], show_header=False)
    wide = FittedTable(
        "Alerts",
        [
            *run_column,
            Column("state", states, number=True),
            Column("rule", rule_cells, floor=RULE_FLOOR),
            Column("since", since, number=True),
            Column("value", values, number=True, justify="right"),
            Column("message / recommendation", details, floor=MESSAGE_FLOOR),
        ],
        caption,
    )
    narrow = FittedTable(
        "Alerts",
        [
            *run_column,
            Column("alert", stacked, floor=RULE_FLOOR),
            Column("message / recommendation", details, floor=MESSAGE_FLOOR),
        ],
        caption,
    )
    return Choice([wide, narrow])


def summary_text(scan: LogScan, labels: Mapping[str, str] | None = None) -> RenderableType:
    """The spec's summary block: of the log's one run, or of the run that decided a log's verdict."""
    run = scan.deciding_run()
    if run is None:
        return Text("No records.", style="dim")
    lines = [text(line) for line in scan.engines[run].summary().lines()]
    if len(scan.engines) > 1:
        lines.insert(
            0, text(f"Summary of run {run} (its verdict, {run_verdict(scan.engines[run])}, is the log's):", "bold")
        )
    return Text("\n").join(lines)


def analyze_report(scan: LogScan, frames: dict[str, pd.DataFrame]) -> Group:
    """The whole report of one log."""
    labels = run_labels(scan.engines)
    runs = runs_shown(scan)
    return Group(
        run_table(scan, labels),
        gradient_trend(frames["grad"], labels, runs),
        layers_table(frames["layers"], scan.thresholds, labels=labels, runs=runs),
        balance_trend(frames["balance"], scan.thresholds, labels, runs),
        alerts_view(scan.alerts(), labels if len(scan.engines) > 1 else None),
        summary_text(scan, labels),
    )
