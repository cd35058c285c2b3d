"""Per-layer gradient norms as a heatmap: layers (model order) x steps, log colour scale.

Thousands of layers do not fit on a screen: past ``MAX_ROWS`` layers, the rows are module groups (the longest
name prefix that gives at most ``MAX_ROWS`` groups; each group's norm is the L2 norm of its layers' gradients),
and the ``WORST`` individual layers furthest from the healthy band (non-finite first) are shown above them.
Steps are binned to ``MAX_COLUMNS``; a cell shows the most extreme value of its bin, so spikes stay visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from moola_watch import rules
from moola_watch.html_report.runs import RunData, positions
from moola_watch.html_report.sampling import time_bins
from moola_watch.html_report.style import ReportFigure, base_layout, log_ticks
from moola_watch.html_report.text import escaped, short

MAX_ROWS = 60
WORST = 8
MAX_COLUMNS = 400


@dataclass(frozen=True)
class Rows:
    """Which heatmap row each layer feeds, and the rows' labels (raw names) top to bottom."""

    labels: list[str]
    members: list[list[str]]  # layers of each row
    worst: int  # rows at the top that are single worst layers


def prefix(name: str, depth: int) -> str:
    """The first ``depth`` dot-separated parts of a parameter name (``encoder.layers.3``)."""
    return ".".join(name.split(".")[:depth])


def module_groups(names: Sequence[str], max_groups: int) -> list[list[str]]:
    """Consecutive layers sharing the longest prefix that yields at most ``max_groups`` groups, in model order;
    if even the first part of the names gives too many, equal consecutive blocks."""
    deepest = max((name.count(".") for name in names), default=0)
    for depth in range(deepest, 0, -1):
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(prefix(name, depth), []).append(name)
        if len(groups) <= max_groups:
            return list(groups.values())
    size = math.ceil(len(names) / max_groups)
    return [list(names[i : i + size]) for i in range(0, len(names), size)]


def badness(layers: pd.DataFrame, center: float) -> pd.Series:
    """Per layer: how far (in decades) its norm strayed from ``center``; non-finite layers rank first."""
    norms = layers["norm"].to_numpy(dtype=float)
    finite = np.isfinite(norms)
    logs = np.log10(np.clip(np.where(finite, norms, 1.0), 1e-30, None))
    frame = pd.DataFrame({"layer": layers["layer"].astype(str), "dev": np.abs(logs - center), "bad": ~finite})
    grouped = frame.groupby("layer", sort=False)
    return grouped["dev"].max() + grouped["bad"].any() * 1000.0


def choose_rows(layers: pd.DataFrame, center: float, max_rows: int = MAX_ROWS, worst: int = WORST) -> Rows:
    """Every layer as a row when they fit; else the worst layers, then module groups."""
    names = list(pd.unique(layers["layer"].astype(str)))
    if len(names) <= max_rows:
        return Rows(names, [[n] for n in names], 0)
    ranked = list(badness(layers, center).sort_values(ascending=False, kind="stable").index[:worst])
    groups = module_groups(names, max_rows - worst)
    labels = [f"worst: {name}" for name in ranked]
    labels += [g[0] if len(g) == 1 else f"{common(g)}.* ({len(g)} layers)" for g in groups]
    return Rows(labels, [[n] for n in ranked] + groups, len(ranked))


def common(names: Sequence[str]) -> str:
    """The dot-separated prefix all ``names`` share (the first name's parent when they share none)."""
    parts = [name.split(".") for name in names]
    shared: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        shared.append(column[0])
    return ".".join(shared) or names[0]


def row_values(layers: pd.DataFrame, rows: Rows, x: np.ndarray) -> pd.DataFrame:
    """Long table (row, x, value): a single layer's norm, or a group's L2 norm (root of its squared norms)."""
    names = layers["layer"].astype(str).to_numpy()
    norms = layers["norm"].to_numpy(dtype=float)
    parts = []
    for row, members in enumerate(rows.members):
        mask = np.isin(names, members)
        part = pd.DataFrame({"x": x[mask], "sq": norms[mask] ** 2})
        if len(members) > 1:
            part = part.groupby("x", sort=True, as_index=False)["sq"].sum()
        parts.append(part.assign(row=row, value=np.sqrt(part["sq"].to_numpy())))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["x", "row", "value"])


def extremes(values: pd.DataFrame, n_rows: int, max_columns: int, center: float) -> tuple[np.ndarray, ...]:
    """Binned matrix (rows x bins) of log10 values, each cell its bin's value furthest from ``center``;
    the bins' x positions; and a mask of cells holding a non-finite value."""
    x = values["x"].to_numpy(dtype=float)
    bins = time_bins(x, max_columns)
    n_bins = int(bins.max()) + 1 if len(bins) else 0
    value = values["value"].to_numpy(dtype=float)
    finite = np.isfinite(value)
    logs = np.where(finite, np.log10(np.clip(np.where(finite, value, 1.0), 1e-30, None)), np.nan)
    frame = pd.DataFrame({"row": values["row"].to_numpy(), "bin": bins, "log": logs,
                          "dev": np.where(finite, np.abs(logs - center), -1.0)})  # fmt: skip
    picked = frame.loc[frame.groupby(["row", "bin"])["dev"].idxmax()]
    z = np.full((n_rows, n_bins), np.nan)
    z[picked["row"].to_numpy(), picked["bin"].to_numpy()] = picked["log"].to_numpy()
    bad = np.zeros((n_rows, n_bins), dtype=bool)
    bad[frame["row"].to_numpy()[~finite], bins[~finite]] = True
    bin_x = pd.Series(x).groupby(bins).max().reindex(range(n_bins)).to_numpy()
    return z, bin_x, bad


def colorscale(th: rules.Thresholds, zmin: float, zmax: float) -> list[list]:
    """Blue (vanishing) through green (healthy) to red (exploding), placed at the thresholds."""
    stops = [
        (th.vanishing, "#08306b"), (th.norm_low, "#4292c6"), (th.healthy_norm_low, "#1a9850"),
        (th.healthy_norm_high, "#91cf60"), (th.norm_large, "#fee08b"), (th.exploding, "#f46d43"),
    ]  # fmt: skip
    scale = [[0.0, "#08306b"]]
    for value, color in stops:
        where = (math.log10(max(value, 1e-30)) - zmin) / (zmax - zmin)
        if scale[-1][0] < where < 1:
            scale.append([where, color])
    return [*scale, [1.0, "#67000d"]]


def heatmap_figure(data: RunData, axis: str, th: rules.Thresholds, slug: str) -> ReportFigure | None:
    """The heatmap of one run's per-layer norms."""
    layers = data.frames["layers"]
    if layers.empty:
        return None
    center = math.log10(math.sqrt(max(th.healthy_norm_low, 1e-30) * max(th.healthy_norm_high, 1e-30)))
    rows = choose_rows(layers, center)
    values = row_values(layers, rows, positions(layers, axis))
    z, bin_x, bad = extremes(values, len(rows.labels), MAX_COLUMNS, center)
    zmin, zmax = math.floor(math.log10(max(th.vanishing, 1e-30))), math.ceil(math.log10(max(th.exploding, 1e-30))) + 1
    ticks, tick_text = log_ticks(zmin, zmax)
    labels = [short(label, 40) for label in rows.labels]
    full = np.array([escaped(label, 300) for label in rows.labels], dtype=object)
    hover = np.where(np.isnan(z), "", np.vectorize(lambda v: f"{10.0**v:.3g}", otypes=[object])(np.nan_to_num(z)))
    fig = go.Figure(
        go.Heatmap(
            z=z, x=bin_x, y=labels, zmin=zmin, zmax=zmax, colorscale=colorscale(th, zmin, zmax), hoverongaps=False,
            customdata=np.repeat(full[:, None], z.shape[1], axis=1), text=hover,
            hovertemplate=f"%{{customdata}}<br>{axis} %{{x}}<br>norm %{{text}}<extra></extra>",
            colorbar={"title": {"text": "norm"}, "tickvals": ticks, "ticktext": tick_text},
        )
    )  # fmt: skip
    rows_bad, cols_bad = np.nonzero(bad)
    if len(rows_bad):
        fig.add_trace(
            go.Scatter(
                x=bin_x[cols_bad], y=[labels[r] for r in rows_bad], mode="markers", name="non-finite",
                marker={"symbol": "x", "size": 9, "color": "black"}, showlegend=False,
                hovertemplate=f"non-finite<br>{axis} %{{x}}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(**base_layout(max(320, 110 + 17 * len(labels)), axis))
    fig.update_layout(margin={"l": 300, "r": 20})
    fig.update_yaxes(autorange="reversed", type="category", tickfont={"size": 10})
    if rows.worst:
        fig.add_shape(type="line", xref="paper", x0=0, x1=1, yref="y", y0=rows.worst - 0.5, y1=rows.worst - 0.5,
                      line={"color": "#333", "width": 2})  # fmt: skip
    n_layers = sum(len(m) for m in rows.members[rows.worst :])
    grouped = (
        f"{n_layers} layers: the {rows.worst} furthest from the healthy band first, then module groups (a group's "
        "norm is the L2 norm of its layers), in model order"
        if rows.worst
        else f"{n_layers} layers in model order"
    )
    return ReportFigure(
        slug,
        f"Per-layer gradient norms · {data.label}",
        f"{grouped}; log colour: blue vanishing (< {th.vanishing:g}), green healthy, red exploding "
        f"(> {th.exploding:g}); x marks a non-finite norm. Each cell is the most extreme value of its step bin.",
        fig,
    )
