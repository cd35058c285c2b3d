"""Per-layer gradient norms as a heatmap: layers (model order) x steps, log colour scale.

Thousands of layers do not fit on a screen: past ``MAX_ROWS`` layers, the rows are module groups (see
``module_groups``; a group's value is the root mean square of its layers' norms, so one layer's thresholds
still read), and the ``WORST`` individual layers furthest from the healthy band (non-finite first) are shown
above them. A big model's records hold module-group norms and name only their extreme tensors: its group rows
are made of the records' groups (``group_rows``, ``group_values``: the same root mean square, from each group's
L2 norm and size), its worst rows of the tensors named.
Steps are binned to ``MAX_COLUMNS``; a cell shows the most extreme value of its bin, so spikes stay visible.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from moola_watch import rules
from moola_watch.counts import counted
from moola_watch.html_report.runs import RunData, positions
from moola_watch.html_report.sampling import time_bins
from moola_watch.html_report.style import ReportFigure, base_layout, log_ticks
from moola_watch.html_report.text import escaped, layer_labels

MAX_ROWS = 60
WORST = 8
MAX_COLUMNS = 400


@dataclass(frozen=True)
class Rows:
    """Which heatmap row each layer feeds, and the rows' labels (raw names) top to bottom."""

    labels: list[str]
    members: list[list[str]]  # layers of each row; a big model's group rows: the records' module groups
    worst: int  # rows at the top that are single worst layers
    tensors: int | None = None  # a big model's: the layers its group rows hold (0: none drawn; None: one per member)


def prefix(name: str, depth: int) -> str:
    """The first ``depth`` dot-separated parts of a parameter name (``encoder.layers.3``)."""
    return ".".join(name.split(".")[:depth])


def by_prefix(names: Sequence[str], depth: int) -> dict[str, list[str]]:
    """Layers grouped by their first ``depth`` name parts, in model order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(prefix(name, depth), []).append(name)
    return groups


def block_label(parent: str, children: Sequence[str], members: Sequence[str]) -> str:
    """``model.layers.0 … 7`` for a block of sibling modules, ``enc.*`` for one module, a lone layer's own name."""
    if len(members) == 1:
        return members[0]
    if len(children) == 1:
        return f"{children[0]}.*"
    last = children[-1][len(parent) + 1 :] if parent else children[-1]
    return f"{children[0]} … {last}"


def module_groups(names: Sequence[str], max_groups: int) -> list[tuple[str, list[str]]]:
    """(label, layers) groups of consecutive layers, in model order, at most ``max_groups`` of them: modules at the
    deepest name level that fits; where the next level has too many (400 transformer blocks), each module's
    children are cut into consecutive blocks (``model.layers.0 … 7``), more blocks for modules with more children."""
    coarse = by_prefix(names, 0)
    deepest = max((name.count(".") + 1 for name in names), default=0)  # at the deepest, each layer alone
    for depth in range(1, deepest + 1):
        finer = by_prefix(names, depth)
        if len(finer) > max_groups:
            return split_children(coarse, finer, depth, max_groups)
        coarse = finer
    return [(block_label("", [p], m), m) for p, m in coarse.items()]


def split_children(
    coarse: dict[str, list[str]], finer: dict[str, list[str]], depth: int, max_groups: int
) -> list[tuple[str, list[str]]]:
    """Each coarse module's children (``finer``, one name part deeper at ``depth``) cut into consecutive blocks;
    at most ``max_groups`` blocks in all."""
    children: dict[str, list[str]] = {parent: [] for parent in coarse}
    for child, members in finer.items():
        children[prefix(members[0], depth - 1)].append(child)
    spare = max_groups - len(coarse)
    out: list[tuple[str, list[str]]] = []
    for parent, kids in children.items():
        blocks = 1 + spare * len(kids) // len(finer)
        size = math.ceil(len(kids) / blocks)
        for start in range(0, len(kids), size):
            chunk = kids[start : start + size]
            members = [name for kid in chunk for name in finer[kid]]
            whole = parent and len(chunk) == len(kids) and len(members) > 1
            out.append((f"{parent}.*" if whole else block_label(parent, chunk, members), members))
    return out


def numbered(name: str) -> list[str | int]:
    """A sort key that puts ``blocks.9`` before ``blocks.10``: a module list's order, as far as names tell it."""
    return [int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name))]


def badness(layers: pd.DataFrame, center: float) -> pd.Series:
    """Per layer: how far (in decades) its norm strayed from ``center``; non-finite layers rank first."""
    norms = layers["norm"].to_numpy(dtype=float)
    finite = np.isfinite(norms)
    logs = np.log10(np.clip(np.where(finite, norms, 1.0), 1e-30, None))
    frame = pd.DataFrame({"layer": layers["layer"].astype(str), "dev": np.abs(logs - center), "bad": ~finite})
    grouped = frame.groupby("layer", sort=False)
    return grouped["dev"].max() + grouped["bad"].any() * 1000.0


def choose_rows(
    layers: pd.DataFrame,
    center: float,
    max_rows: int = MAX_ROWS,
    worst: int = WORST,
    th: rules.Thresholds | None = None,
) -> Rows:
    """Every layer as a row when they fit; else the worst layers (never a bias zero by construction under ``th``:
    a transformer has one per attention layer, all of them decades below the band), then module groups."""
    names = list(pd.unique(layers["layer"].astype(str)))
    where = [column for column in ("run", "epoch", "step") if column in layers]  # what tells records apart
    if where and len(names) > layers.groupby(where, dropna=False, sort=False).size().max():
        names.sort(key=numbered)  # records name different layers (one replaced mid-run): first seen is no model order
    if len(names) <= max_rows:
        return Rows(names, [[n] for n in names], 0)
    ranked = worst_layers(layers, center, worst, th)
    groups = module_groups(names, max_rows - worst)
    labels = [f"worst: {name}" for name in ranked]
    labels += [label if len(members) == 1 else f"{label} ({len(members)} layers)" for label, members in groups]
    return Rows(labels, [[n] for n in ranked] + [members for _label, members in groups], len(ranked))


def worst_layers(layers: pd.DataFrame, center: float, worst: int, th: rules.Thresholds | None) -> list[str]:
    """The ``worst`` layers furthest from ``center`` (non-finite first), never a bias zero by construction under
    ``th``."""
    ranking = badness(layers, center)
    if th is not None:
        peaks = layers.assign(layer=layers["layer"].astype(str)).groupby("layer", sort=False)["norm"].max()
        ranking = ranking.drop(index=list(rules.zero_by_construction(peaks.to_dict(), th)))
    return list(ranking.sort_values(ascending=False, kind="stable").index[:worst])


def group_rows(
    layers: pd.DataFrame,
    groups: pd.DataFrame,
    center: float,
    max_rows: int = MAX_ROWS,
    worst: int = WORST,
    th: rules.Thresholds | None = None,
) -> Rows:
    """A big model's rows: the worst tensors its records name (``layers``, as :func:`choose_rows` picks them),
    then its records' module groups (``groups``: group, tensors, each of a known size), in model order, merged
    into the rows left; each label says how many layers (tensors) the row holds, the most it held at a step.
    Without groups (records that do not say their sizes), the rows are all the worst tensors."""
    names = [str(name) for name in groups["group"].unique()]  # in model order: as the first record lists them
    ranked = worst_layers(layers, center, worst if names else max_rows, th)
    peak = groups.groupby("group", observed=True, sort=False)["tensors"].max()
    sizes = dict(zip(map(str, peak.index), peak.to_numpy().tolist(), strict=True))
    blocks = module_groups(names, max_rows - worst)
    held = [sum(sizes[name] for name in members) for _label, members in blocks]
    labels = [f"worst: {name}" for name in ranked]
    labels += [label if n == 1 else f"{label} ({n} layers)" for (label, _members), n in zip(blocks, held, strict=True)]
    members = [[name] for name in ranked] + [members for _label, members in blocks]
    return Rows(labels, members, len(ranked), sum(held))


def group_values(groups: pd.DataFrame, rows: Rows, x: np.ndarray) -> pd.DataFrame:
    """Long table (row, x, value) of a big model's group rows: the root mean square of the row's layers' norms,
    from its records' groups, each the L2 norm of ``tensors`` layers: the root of (the sum of their squared norms
    over the sum of their sizes) (non-finite if any member is)."""
    row_of = {name: row for row in range(rows.worst, len(rows.members)) for name in rows.members[row]}
    names = groups["group"].astype("category")
    lookup = np.array([row_of.get(str(name), -1) for name in names.cat.categories], dtype=np.int64)
    mine = lookup[names.cat.codes.to_numpy()]
    norms = groups["norm"].to_numpy(dtype=float)
    keep = mine >= 0
    frame = pd.DataFrame({"row": mine[keep], "x": x[keep], "sq": np.where(np.isfinite(norms), norms**2, np.inf)[keep],
                          "n": groups["tensors"].to_numpy(dtype=float)[keep]})  # fmt: skip
    summed = frame.groupby(["row", "x"], sort=True)[["sq", "n"]].sum().reset_index()
    return summed.assign(value=np.sqrt(summed["sq"].to_numpy() / summed["n"].to_numpy()))


def rows_and_values(
    layers: pd.DataFrame, groups: pd.DataFrame, axis: str, center: float, th: rules.Thresholds
) -> tuple[Rows, pd.DataFrame]:
    """The heatmap's rows and the long table (row, x, value) of what they show: a big model's (``groups``, its
    records' module-group norms, not empty) from its group norms, its worst tensors above them from ``layers``;
    any other model's from ``layers`` alone."""
    if groups.empty:
        rows = choose_rows(layers, center, th=th)
        return rows, row_values(layers, rows, positions(layers, axis))
    unsized = groups["tensors"].isna()  # a group's norm is read per tensor only where its size is known
    sized = groups[~unsized] if unsized.any() else groups
    sized = pd.concat([sized, tensors_as_groups(layers, sized, axis)], ignore_index=True)
    rows = group_rows(layers, sized, center, th=th)
    worst = Rows(rows.labels[: rows.worst], rows.members[: rows.worst], rows.worst)
    parts = [row_values(layers, worst, positions(layers, axis)), group_values(sized, rows, positions(sized, axis))]
    return rows, pd.concat(parts, ignore_index=True)


def tensors_as_groups(layers: pd.DataFrame, groups: pd.DataFrame, axis: str) -> pd.DataFrame:
    """A big model's records that hold per-tensor norms (at a step when no more tensors had a gradient than a
    record names one by one) as rows of ``groups``: each of its module groups the L2 norm of its tensors there
    (a tensor joins the group whose name is the longest prefix of its own), so its group rows are not blank at
    those steps. The groups of flat names (runs of neighbours, ``first..last``) are left out."""
    grouped_at = np.unique(positions(groups, axis))
    own = layers[~np.isin(positions(layers, axis), grouped_at)]
    names = [str(name) for name in groups["group"].unique() if ".." not in str(name)]
    if own.empty or not names:
        return groups.iloc[:0]
    known = set(names)

    def group_of(layer: str) -> str | None:
        parts = layer.split(".")
        return next((p for depth in range(len(parts), 0, -1) if (p := ".".join(parts[:depth])) in known), None)

    group = own["layer"].astype(str).map(group_of)
    kept = own.assign(group=group, sq=np.square(own["norm"].to_numpy(dtype=float)))[group.notna()]
    summed = kept.groupby(["run", "epoch", "step", "group"], sort=False, dropna=False, observed=True)
    out = summed.agg(sq=("sq", "sum"), tensors=("sq", "size")).reset_index()
    return out.assign(norm=np.sqrt(out.pop("sq")))[list(groups.columns)].astype({"tensors": "Int64"})


def row_values(layers: pd.DataFrame, rows: Rows, x: np.ndarray) -> pd.DataFrame:
    """Long table (row, x, value): a single layer's norm, or a group's root mean square of its layers' norms
    (comparable with one layer's thresholds; non-finite if any member is)."""
    names = layers["layer"].astype("category")
    categories = {name: code for code, name in enumerate(names.cat.categories.astype(str))}
    codes = names.cat.codes.to_numpy()
    norms = layers["norm"].to_numpy(dtype=float)
    squares = np.where(np.isfinite(norms), norms**2, np.inf)
    parts = []
    for first, last in ((0, rows.worst), (rows.worst, len(rows.members))):  # worst layers also count in a group
        row_of = np.full(len(categories), -1)
        for row in range(first, last):
            row_of[[categories[name] for name in rows.members[row]]] = row
        mine = row_of[codes]
        keep = mine >= 0
        parts.append(pd.DataFrame({"row": mine[keep], "x": x[keep], "sq": squares[keep]}))
    grouped = pd.concat(parts, ignore_index=True).groupby(["row", "x"], sort=True)["sq"].mean().reset_index()
    return grouped.assign(value=np.sqrt(grouped["sq"].to_numpy()))


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


def rows_caption(rows: Rows) -> str:
    """What the rows show, in words: the figure's caption begins with it."""
    if rows.tensors == 0:
        return (
            f"The {rows.worst} layers furthest from the healthy band among the largest and smallest each record "
            "names (blank where a record did not name one): this big model's records hold module-group norms but "
            "not how many layers each group holds (written before records said), so no group is drawn"
        )
    if rows.tensors is not None:
        return (
            f"{counted(rows.tensors, 'layer')} of a big model, whose records hold module-group norms: the {rows.worst}"
            " furthest from the healthy band among the largest and smallest each record names first (blank where a "
            "record did not name one), then the records' module groups in model order (a group's value is the root "
            "mean square of its layers' norms: its L2 norm over the root of its layer count, which lies between its "
            "smallest and largest layer's norm, so a group coloured vanishing or exploding holds such a layer)"
        )
    n_layers = sum(len(m) for m in rows.members[rows.worst :])
    if rows.worst:
        return (
            f"{counted(n_layers, 'layer')}: the {rows.worst} furthest from the healthy band first, then module "
            "groups in model order (a group's value is the root mean square of its layers' norms)"
        )
    return f"{counted(n_layers, 'layer')} in model order"


def heatmap_figure(data: RunData, axis: str, slug: str) -> ReportFigure | None:
    """The heatmap of one run's per-layer norms, coloured at the thresholds that run was judged by."""
    th = data.thresholds
    layers = data.frames["layers"]
    if layers.empty:
        return None
    center = math.log10(math.sqrt(max(th.healthy_norm_low, 1e-30) * max(th.healthy_norm_high, 1e-30)))
    rows, values = rows_and_values(layers, data.frames["groups"], axis, center, th)
    z, bin_x, bad = extremes(values, len(rows.labels), MAX_COLUMNS, center)
    zmin, zmax = math.floor(math.log10(max(th.vanishing, 1e-30))), math.ceil(math.log10(max(th.exploding, 1e-30))) + 1
    ticks, tick_text = log_ticks(zmin, zmax)
    labels = layer_labels(rows.labels, 40)
    full = np.array([escaped(label, 300) for label in rows.labels], dtype=object)
    hover = np.where(np.isnan(z), "", np.vectorize(lambda v: f"{10.0**v:.3g}", otypes=[object])(np.nan_to_num(z)))
    fig = go.Figure(
        go.Heatmap(
            z=z, x=bin_x, y=labels, zmin=zmin, zmax=zmax, colorscale=colorscale(th, zmin, zmax), hoverongaps=False,
            customdata=np.repeat(full[:, None], z.shape[1], axis=1), text=hover,
            hovertemplate=f"%{{customdata}}<br>{axis} %{{x}}<br>norm %{{text}}<extra></extra>",
            colorbar={"title": {"text": "norm;<br>group:<br>RMS per<br>layer" if rows.tensors else "norm"},
                      "tickvals": ticks, "ticktext": tick_text},
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
    if 0 < rows.worst < len(rows.labels):
        fig.add_shape(type="line", xref="paper", x0=0, x1=1, yref="y", y0=rows.worst - 0.5, y1=rows.worst - 0.5,
                      line={"color": "#333", "width": 2})  # fmt: skip
    return ReportFigure(
        slug,
        f"Per-layer gradient norms · {data.label}",
        f"{rows_caption(rows)}; log colour: blue vanishing (< {th.vanishing:g}), green healthy, red exploding "
        f"(> {th.exploding:g}); x marks a non-finite norm. Each cell is the most extreme value of its step bin.",
        fig,
    )
