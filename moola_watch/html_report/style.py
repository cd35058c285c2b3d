"""Colours, line styles and the common layout: one look for every figure, in the page and in the PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

# No red among the runs: red means an alert or the exploding band.
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SEVERITY_COLORS = {"info": "#1f77b4", "warning": "#e6a100", "error": "#d62728", "critical": "#7b1fa2"}
HEALTHY_FILL = "rgba(44, 160, 44, 0.12)"
WARNING_FILL = "rgba(230, 161, 0, 0.10)"
DANGER_FILL = "rgba(214, 39, 40, 0.10)"
VANISH_FILL = "rgba(31, 119, 180, 0.10)"
WIDTH = 1200  # pixels of a PNG; the page's plots follow the window's width


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: its file name in ``--png DIR``, its heading and what it shows (both plain
    text, escaped where shown)."""

    slug: str
    title: str
    caption: str
    figure: go.Figure


@dataclass(frozen=True)
class SeriesStyle:
    color: str
    dash: str


def series_style(run_index: int, series_index: int, several_runs: bool) -> SeriesStyle:
    """One run: a colour per series. Several runs: a colour per run and a line style per series, so the same
    quantity of two runs is told apart at a glance."""
    if several_runs:
        return SeriesStyle(RUN_COLORS[run_index % len(RUN_COLORS)], DASHES[series_index % len(DASHES)])
    return SeriesStyle(SERIES_COLORS[series_index % len(SERIES_COLORS)], "solid")


def trace_name(label: str, series: str, several_runs: bool) -> str:
    """Legend text (both parts already escaped): the series, prefixed by the run when several are overlaid."""
    return f"{label} · {series}" if several_runs else series


def base_layout(height: int, x_title: str) -> dict[str, Any]:
    """Layout shared by the figures: white template, legend on the right, hover across traces."""
    return {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 70, "r": 20, "t": 30, "b": 50},
        "hovermode": "closest",
        "legend": {"orientation": "v", "x": 1.01, "y": 1, "font": {"size": 11}},
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
        "xaxis_title": x_title,
    }


def log_ticks(lo: int, hi: int) -> tuple[list[int], list[str]]:
    """Tick positions and labels (``1e-7`` .. ``10``) for a colour bar over log10 values."""
    values = list(range(lo, hi + 1))
    return values, [f"{10.0**v:g}" for v in values]
