"""Gradient norms over steps: total, mean and max of the layer norms, on a log scale, with the rules' bands."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from moola_watch import rules
from moola_watch.html_report.alerts import GRADIENT_RULES, add_markers
from moola_watch.html_report.runs import RunData, positions
from moola_watch.html_report.sampling import keep_extremes
from moola_watch.html_report.style import (
    DANGER_FILL,
    HEALTHY_FILL,
    VANISH_FILL,
    WARNING_FILL,
    ReportFigure,
    base_layout,
    series_style,
    trace_name,
)
from moola_watch.html_report.text import escaped, short

STATS = (("total_norm", "total"), ("mean_norm", "mean"), ("max_norm", "max"))


def finite_range(values: Sequence[np.ndarray], floor: float, ceiling: float) -> tuple[float, float]:
    """log10 axis range covering the positive finite values and ``[floor, ceiling]``, with a little margin."""
    arrays = [v[np.isfinite(v) & (v > 0)] for v in values]
    data = np.concatenate(arrays) if arrays else np.zeros(0)
    lo = min(float(data.min()), floor) if data.size else floor
    hi = max(float(data.max()), ceiling) if data.size else ceiling
    return math.log10(lo) - 0.3, math.log10(hi) + 0.3


def bands(th: rules.Thresholds) -> list[dict]:
    """The norm bands as shapes: healthy mean norm (green), low and vanishing (blue), large (amber),
    exploding (red), and the per-layer limits as dashed lines."""
    huge, tiny = 1e30, 1e-30

    def band(y0: float, y1: float, fill: str) -> dict:
        return {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": y0, "y1": y1,
                "fillcolor": fill, "line": {"width": 0}, "layer": "below"}  # fmt: skip

    def line(y: float, color: str) -> dict:
        return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": y, "y1": y,
                "line": {"color": color, "width": 1, "dash": "dash"}, "layer": "below"}  # fmt: skip

    return [
        band(th.healthy_norm_low, th.healthy_norm_high, HEALTHY_FILL),
        band(tiny, th.norm_low, VANISH_FILL),
        band(th.norm_large, th.norm_exploding, WARNING_FILL),
        band(th.norm_exploding, huge, DANGER_FILL),
        line(th.vanishing, "#1f77b4"),
        line(th.exploding, "#d62728"),
    ]


def band_labels(th: rules.Thresholds) -> list[dict]:
    """Text naming each band (mean-norm bands on the right, the per-layer limits on the left)."""

    def label(y: float, text: str, color: str) -> dict:
        return {"xref": "paper", "x": 1, "xanchor": "right", "yref": "y", "y": math.log10(y), "text": text,
                "showarrow": False, "font": {"size": 10, "color": color}, "yanchor": "bottom"}  # fmt: skip

    def left(y: float, text: str, color: str) -> dict:
        return {**label(y, text, color), "x": 0, "xanchor": "left"}

    return [
        label(th.healthy_norm_low, f"healthy mean {th.healthy_norm_low:g}-{th.healthy_norm_high:g}", "#2ca02c"),
        label(th.norm_exploding, f"exploding mean > {th.norm_exploding:g}", "#d62728"),
        left(th.exploding, f"a layer exploding > {th.exploding:g}", "#d62728"),
        left(th.vanishing, f"a layer vanishing < {th.vanishing:g}", "#1f77b4"),
        label(th.norm_large, f"large mean > {th.norm_large:g}", "#b07d00"),
    ]


def norms_figure(runs: Sequence[RunData], axis: str, th: rules.Thresholds) -> ReportFigure | None:
    """Total, mean and max gradient norm of every run, overlaid; the bands; alert markers."""
    with_grad = [(i, d) for i, d in enumerate(runs) if not d.frames["grad"].empty]
    if not with_grad:
        return None
    several = len(runs) > 1
    fig = go.Figure()
    drawn: list[np.ndarray] = []
    nonfinite: list[tuple[RunData, np.ndarray]] = []
    for run_index, data in with_grad:
        grad = data.frames["grad"]
        x = positions(grad, axis)
        for series_index, (column, name) in enumerate(STATS):
            y = grad[column].to_numpy(dtype=float, na_value=np.nan)
            keep = keep_extremes(y)
            drawn.append(y[keep])
            style = series_style(run_index, series_index, several)
            fig.add_trace(
                go.Scatter(
                    x=x[keep], y=np.where(np.isfinite(y[keep]), y[keep], np.nan), mode="lines",
                    name=trace_name(short(data.label), name, several), legendgroup=escaped(data.label),
                    line={"color": style.color, "dash": style.dash, "width": 1.8},
                    hovertemplate=f"{name} %{{y:.4g}}<br>{axis} %{{x}}<extra>{short(data.label)}</extra>",
                )
            )  # fmt: skip
        bad = grad["nonfinite_count"].fillna(0).to_numpy() > 0
        if bad.any():
            nonfinite.append((data, x[bad]))
    lo, hi = finite_range(drawn, th.norm_low / 2, th.exploding * 2)
    top = 10 ** (hi - 0.15)  # NaN/Inf has no place on a log axis: marked along the top edge
    for data, x in nonfinite:
        fig.add_trace(
            go.Scatter(
                x=x, y=[top] * len(x), mode="markers", name=trace_name(short(data.label), "non-finite", several),
                legendgroup=escaped(data.label), marker={"symbol": "x", "size": 10, "color": "#7b1fa2"},
                hovertemplate=f"non-finite gradients<br>{axis} %{{x}}<extra>{short(data.label)}</extra>",
            )
        )  # fmt: skip

    def at(alert: rules.Alert) -> float:
        value = alert.value
        ok = value is not None and math.isfinite(value) and value > 0
        return min(max(value, 10**lo), 10**hi) if ok else top  # type: ignore[type-var]

    add_markers(fig, runs, axis, GRADIENT_RULES, at)
    fig.update_layout(**base_layout(460, axis), shapes=[*fig.layout.shapes, *bands(th)], annotations=band_labels(th))
    fig.update_yaxes(type="log", range=[lo, hi], title="gradient L2 norm", exponentformat="power")
    return ReportFigure(
        "gradient_norms",
        "Gradient norms",
        "Total (global) norm, mean and max of the per-layer norms, log scale. Bands: the healthy mean-norm range "
        f"({th.healthy_norm_low:g}-{th.healthy_norm_high:g}), low (< {th.norm_low:g}), large (> {th.norm_large:g}) "
        f"and exploding (> {th.norm_exploding:g}) mean norm; dashed: a single layer vanishing (< {th.vanishing:g}) "
        f"or exploding (> {th.exploding:g}). Triangles: where gradient alerts began.",
        fig,
    )
