"""Per-task losses and metrics over steps: is each task still learning (the other half of a collapse)?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moola_watch.html_report.alerts import BALANCE_RULES, RUN_RULES, add_markers
from moola_watch.html_report.runs import RunData, positions
from moola_watch.html_report.sampling import keep_extremes
from moola_watch.html_report.style import ReportFigure, base_layout, series_style, trace_name
from moola_watch.html_report.text import escaped, short

# Columns of the epochs frame that are not a metric; per-task losses are ``loss_<task>``.
NOT_METRICS = frozenset({"run", "epoch", "step", "time", "lr", "duration_s", "train_loss", "val_loss"})
MAX_METRICS = 4
LOSS_PREFIX = "loss_"


def loss_columns(frame: pd.DataFrame) -> list[str]:
    """Total and per-task loss columns present, in a stable order."""
    fixed = [c for c in ("train_loss", "val_loss") if c in frame and frame[c].notna().any()]
    return fixed + [c for c in frame.columns if c.startswith(LOSS_PREFIX) and frame[c].notna().any()]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric columns that are metrics (``type_acc``, ``pointer_err_bars``, ...): anything not known otherwise."""
    return [
        c for c in frame.columns
        if c not in NOT_METRICS and not c.startswith(LOSS_PREFIX) and pd.api.types.is_numeric_dtype(frame[c])
        and frame[c].notna().any()
    ]  # fmt: skip


def loss_label(column: str) -> str:
    """``train_loss`` -> ``train``, ``loss_pointer`` -> ``pointer`` (escaped: task names come from the log)."""
    if column.startswith(LOSS_PREFIX):
        return escaped(column[len(LOSS_PREFIX) :])
    return column.removesuffix("_loss")


def task_losses(data: RunData) -> pd.DataFrame:
    """Where a run's own per-task losses are: its epoch records' (``task_losses``, epoch means) when it recorded
    them, else its balance samples' (one batch each: a plain loop's ``on_epoch_end`` is given the total alone)."""
    epochs = data.frames["epochs"]
    if any(column.startswith(LOSS_PREFIX) for column in loss_columns(epochs)):
        return epochs
    return data.frames["balance"]


def loss_series(data: RunData) -> list[tuple[str, pd.DataFrame]]:
    """Each loss drawn of a run, with the frame it comes from: the total losses of its epochs, then each task's."""
    epochs, tasks = data.frames["epochs"], task_losses(data)
    totals = [(column, epochs) for column in loss_columns(epochs) if not column.startswith(LOSS_PREFIX)]
    return totals + [(column, tasks) for column in loss_columns(tasks) if column.startswith(LOSS_PREFIX)]


def progress_figure(runs: Sequence[RunData], axis: str) -> ReportFigure | None:
    """Losses (log scale) in the first row, then one row per metric; runs overlaid."""
    drawn = [(i, d, loss_series(d)) for i, d in enumerate(runs)]
    drawn = [(i, d, series) for i, d, series in drawn if series or not d.frames["epochs"].empty]
    losses: list[str] = []
    metrics: list[str] = []
    for _i, data, series in drawn:
        losses += [column for column, _frame in series if column not in losses]
        metrics += [c for c in metric_columns(data.frames["epochs"]) if c not in metrics]
    metrics = metrics[:MAX_METRICS]
    if not losses and not metrics:
        return None
    panels = (["losses"] if losses else []) + metrics
    titles = ["losses" if p == "losses" else escaped(p) for p in panels]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=titles)
    several = len(runs) > 1
    tops: list[float] = []  # the first row's highest values: where alert triangles sit
    for run_index, data, series in drawn:
        label = short(data.label)
        for row, panel in enumerate(panels, start=1):
            columns = series if panel == "losses" else [(panel, data.frames["epochs"])]
            for column, frame in columns:
                if column not in frame:
                    continue
                x = positions(frame, axis)
                y = frame[column].to_numpy(dtype=float, na_value=np.nan)
                keep = keep_extremes(y)
                if row == 1 and np.isfinite(y).any():
                    tops.append(float(np.nanmax(np.where(np.isfinite(y), y, np.nan))))
                name = loss_label(column) if panel == "losses" else escaped(column)
                # one colour per series across the panels: a metric's is not the training loss's (both were blue)
                index = losses.index(column) if panel == "losses" else len(losses) + metrics.index(panel)
                style = series_style(run_index, index, several)
                fig.add_trace(
                    go.Scatter(
                        x=x[keep], y=y[keep], mode="lines+markers" if len(keep) <= 60 else "lines",
                        name=trace_name(label, name, several), legendgroup=escaped(data.label),
                        line={"color": style.color, "dash": style.dash, "width": 1.8}, marker={"size": 4},
                        hovertemplate=f"{name} %{{y:.4g}}<br>{axis} %{{x}}<extra>{label}</extra>",
                    ),
                    row=row, col=1,
                )  # fmt: skip
    fig.update_layout(**base_layout(230 * len(panels) + 80, axis))
    fig.update_xaxes(title=None)
    fig.update_xaxes(title=axis, row=len(panels), col=1)
    if losses:
        fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    top = max(tops, default=1.0)
    add_markers(fig, runs, axis, BALANCE_RULES | RUN_RULES, lambda _alert: top, row=1)
    return ReportFigure(
        "losses_metrics",
        "Losses and metrics",
        "Training and validation loss and each task's own loss (log scale: its epoch means where the trainer "
        "recorded them, else its batch at each balance sample), then each metric the trainer recorded. "
        "A task whose gradient is dominated but whose loss still falls is still learning; a collapse also stops "
        "its progress. Triangles: where balance and run alerts (failed, interrupted, stale) began.",
        fig,
    )
