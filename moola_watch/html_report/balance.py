"""Task balance over steps: each task's gradient norm and share of the update, the cosines between tasks, the
pointer/type ratio with its healthy band and collapse window, and the loss weights when they change."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moola_watch import rules
from moola_watch.analyze import window_means
from moola_watch.html_report.alerts import BALANCE_RULES, add_markers
from moola_watch.html_report.norms import finite_range
from moola_watch.html_report.runs import RunData, positions
from moola_watch.html_report.sampling import keep_extremes
from moola_watch.html_report.style import HEALTHY_FILL, ReportFigure, base_layout, series_style, trace_name
from moola_watch.html_report.text import escaped, short


@dataclass(frozen=True)
class Panel:
    """One row of the figure: which columns (``prefix`` + series name) it draws, and how."""

    key: str
    title: str
    prefix: str
    log: bool = False


def series(frame: pd.DataFrame, prefix: str) -> list[str]:
    """The series names of columns ``prefix<name>`` (tasks, or task pairs for cosines), in column order."""
    return [column[len(prefix) :] for column in frame.columns if column.startswith(prefix)]


def cosine_prefix(frame: pd.DataFrame) -> str:
    """Pairwise cosines (``cosine_a|b``) when recorded, else the two-task ``cosine`` column itself."""
    return "cosine_" if series(frame, "cosine_") else "cosine"


def varies(frame: pd.DataFrame, columns: Sequence[str]) -> bool:
    """Does any of ``columns`` take more than one value (the loss weights were changed during the run)?"""
    return any(frame[c].nunique(dropna=True) > 1 for c in columns if c in frame)


def panels(frames: Sequence[pd.DataFrame]) -> list[Panel]:
    """The rows worth drawing for these balance frames."""

    def has(prefix: str) -> bool:
        return any(series(f, prefix) for f in frames)

    out = []
    if has("norm_"):
        out.append(Panel("norms", "task gradient norm (weighted loss)", "norm_", log=True))
    if has("share_"):
        out.append(Panel("shares", "share of the update", "share_"))
    if any(cosine_prefix(f) in f or series(f, "cosine_") for f in frames):
        out.append(Panel("cosine", "cosine between task gradients", ""))
    if any("ratio" in f and f["ratio"].notna().any() for f in frames):
        out.append(Panel("ratio", "pointer/type gradient ratio", "", log=True))
    if any(varies(f, [f"weight_{t}" for t in series(f, "weight_")]) for f in frames):
        out.append(Panel("weights", "loss weight", "weight_"))
    return out


def _line(x: np.ndarray, y: np.ndarray, name: str, group: str, color: str, dash: str, legend: bool,
          hover: str) -> go.Scatter:  # fmt: skip
    keep = keep_extremes(y)
    return go.Scatter(
        x=x[keep], y=np.where(np.isfinite(y[keep]), y[keep], np.nan), mode="lines", name=name, legendgroup=group,
        showlegend=legend, line={"color": color, "dash": dash, "width": 1.8}, hovertemplate=hover,
    )  # fmt: skip


def ratio_shapes(th: rules.Thresholds, row_axis: str) -> list[dict]:
    """The healthy band and the collapse thresholds on the ratio row."""
    band = {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": row_axis, "y0": th.balance_low,
            "y1": th.balance_high, "fillcolor": HEALTHY_FILL, "line": {"width": 0}, "layer": "below"}  # fmt: skip

    def line(y: float) -> dict:
        return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": row_axis, "y0": y, "y1": y,
                "line": {"color": "#d62728", "width": 1, "dash": "dash"}, "layer": "below"}  # fmt: skip

    return [band, line(th.collapse_high), line(th.collapse_low)]


class Styles:
    """A stable style index per series name (tasks, task pairs, ratio lines) across panels and runs, and a
    legend entry only the first time a (run, series) is drawn."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.in_legend: set[tuple[str, str]] = set()

    def index(self, name: str) -> int:
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)

    def first(self, run: str, name: str) -> bool:
        new = (run, name) not in self.in_legend
        self.in_legend.add((run, name))
        return new


def ratio_lines(frame: pd.DataFrame, th: rules.Thresholds) -> list[tuple[str, np.ndarray]]:
    """The pointer/type ratio and the collapse window's mean after each sample (NaN until the window is full)."""
    ratio = frame["ratio"].to_numpy(dtype=float, na_value=np.nan)
    window = np.array([np.nan if m is None else m for m in window_means(ratio.tolist(), th)], dtype=float)
    return [("ratio", ratio), (f"collapse window mean ({th.window} samples)", window)]


def panel_lines(frame: pd.DataFrame, panel: Panel, th: rules.Thresholds) -> list[tuple[str, np.ndarray]]:
    """(series name, values) drawn in ``panel`` for one run's balance frame."""
    if panel.key == "ratio":
        return ratio_lines(frame, th) if "ratio" in frame and frame["ratio"].notna().any() else []
    prefix = cosine_prefix(frame) if panel.key == "cosine" else panel.prefix
    if not prefix.endswith("_"):  # the two-task ``cosine`` column
        return [("pointer|type", frame[prefix].to_numpy(dtype=float, na_value=np.nan))] if prefix in frame else []
    return [(name, frame[prefix + name].to_numpy(dtype=float, na_value=np.nan)) for name in series(frame, prefix)]


def balance_figure(runs: Sequence[RunData], axis: str, th: rules.Thresholds) -> ReportFigure | None:
    """Every balance panel of every run, overlaid (a colour per series, or per run when several); each run's
    window mean over its own window, the band and collapse lines at ``th``."""
    with_balance = [(i, d) for i, d in enumerate(runs) if not d.frames["balance"].empty]
    rows = panels([d.frames["balance"] for _i, d in with_balance])
    if not rows:
        return None
    several = len(runs) > 1
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.045,
                        subplot_titles=[p.title for p in rows])  # fmt: skip
    styles = Styles()
    ratios: list[np.ndarray] = []
    for run_index, data in with_balance:
        frame = data.frames["balance"]
        x = positions(frame, axis)
        label = short(data.label)
        for row, panel in enumerate(rows, start=1):
            for name, y in panel_lines(frame, panel, data.thresholds):
                if panel.key == "ratio":
                    ratios.append(y)
                shown = escaped(name)
                style = series_style(run_index, styles.index(name), several)
                group = escaped(f"{data.label}-{name}")
                fig.add_trace(
                    _line(x, y, trace_name(label, shown, several), group, style.color, style.dash,
                          styles.first(data.label, name), f"{shown} %{{y:.4g}}<br>{axis} %{{x}}<extra>{label}</extra>"),
                    row=row, col=1,
                )  # fmt: skip
    fig.update_layout(**base_layout(210 * len(rows) + 80, axis))
    fig.update_xaxes(title=None)
    fig.update_xaxes(title=axis, row=len(rows), col=1)
    keys = [p.key for p in rows]
    for row, panel in enumerate(rows, start=1):
        if panel.key == "norms":
            fig.update_yaxes(type="log", exponentformat="power", row=row, col=1)
        if panel.key == "cosine":
            fig.update_yaxes(range=[-1.05, 1.05], zeroline=True, row=row, col=1)
    marker_row, lo, hi = 1, 0.0, 0.0
    if "ratio" in keys:
        marker_row = keys.index("ratio") + 1
        lo, hi = finite_range(ratios, th.collapse_low / 2, th.collapse_high * 2)
        fig.update_layout(shapes=[*fig.layout.shapes, *ratio_shapes(th, f"y{marker_row if marker_row > 1 else ''}")])
        fig.update_yaxes(type="log", range=[lo, hi], row=marker_row, col=1)

    def at(alert: rules.Alert) -> float:
        """On the ratio row: the alert's value, kept inside the axis; elsewhere the top of the first row."""
        value = alert.value
        if "ratio" not in keys or value is None or not math.isfinite(value) or value <= 0:
            return 10**hi if "ratio" in keys else 1.0
        return min(max(value, 10**lo), 10**hi)

    add_markers(fig, runs, axis, BALANCE_RULES, at, row=marker_row)
    return ReportFigure("task_balance", "Task balance", caption(keys, th), fig)


#: What each panel draws, for the caption: only the panels drawn are described.
PANEL_WORDS = {
    "norms": "per-task gradient norms on the shared parameters (weighted losses)",
    "shares": "each task's share of the update",
    "cosine": "the cosine between the task gradients",
    "weights": "the loss weights (drawn because they changed)",
}


def caption(keys: Sequence[str], th: rules.Thresholds) -> str:
    """The figure's caption for the panels ``keys`` (:func:`panels`' keys, in order): what each drawn panel shows,
    and the ratio panel's band and thresholds only when it is drawn (a run of three or more tasks has none)."""
    shown = [PANEL_WORDS[key] for key in keys if key in PANEL_WORDS]
    parts = []
    if shown:
        listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
        parts.append(f"{listed[0].upper()}{listed[1:]}.")
    if "ratio" in keys:
        parts.append(
            f"Pointer/type ratio: green is the healthy band ({th.balance_low:g}-{th.balance_high:g}); dashed red the "
            f"collapse thresholds ({th.collapse_low:g} and {th.collapse_high:g}) that the mean over the last "
            f"{th.window} samples (the collapse window) is held against."
        )
    parts.append("Triangles: where balance alerts began.")
    return " ".join(parts)
