"""``moola-watch report``: one self-contained HTML file (and optionally PNGs) from one or more logs.

One module per concept: ``runs`` (analyze's frames split by run), ``sampling`` (thinning for drawing),
``norms``, ``heatmap``, ``balance``, ``progress`` and ``alerts`` (the figures), ``compare`` (the table),
``page`` (the HTML document) and ``png`` (static export); ``text`` makes every string from a log inert.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moola_watch import analyze, rules
from moola_watch.counts import counted
from moola_watch.html_report.alerts import alert_rows, timeline_figure
from moola_watch.html_report.balance import balance_figure
from moola_watch.html_report.compare import comparison
from moola_watch.html_report.heatmap import heatmap_figure
from moola_watch.html_report.norms import norms_figure
from moola_watch.html_report.page import Page, Table, render
from moola_watch.html_report.png import PngError, write_pngs
from moola_watch.html_report.progress import progress_figure
from moola_watch.html_report.runs import RunData, collect_runs, x_axis
from moola_watch.html_report.style import ReportFigure

__all__ = ["PngError", "ReportError", "Written", "build_figures", "build_page", "write_report"]

ALERT_COLUMNS = ("severity", "state", "run", "rule", "since", "resolved", "message", "recommendation", "evidence")
#: Runs drawn at most (a sweep appended into one log can hold hundreds: one heatmap and trace each would make a
#: page no browser draws in reasonable time); every run is in the comparison table and the alerts table.
MAX_DRAWN_RUNS = 12


class ReportError(Exception):
    """The report could not be written (the message says why and what to do)."""


@dataclass(frozen=True)
class Written:
    """What ``write_report`` wrote."""

    html: Path
    size: int
    pngs: list[Path] = field(default_factory=list)
    runs: int = 0


def build_figures(runs: Sequence[RunData], thresholds: rules.Thresholds) -> list[ReportFigure]:
    """Every figure the runs have data for, in reading order: norms, layers, balance, losses, alerts; the bands
    that the runs share drawn at ``thresholds``, what belongs to one run (its heatmap, its collapse window's mean)
    at the thresholds it was judged by."""
    axis = x_axis(runs)
    heatmaps = [heatmap_figure(data, axis, f"layers_{i}") for i, data in enumerate(runs, start=1)]
    candidates = [
        norms_figure(runs, axis, thresholds),
        *heatmaps,
        balance_figure(runs, axis, thresholds),
        progress_figure(runs, axis),
        timeline_figure(runs, axis),
    ]
    return [figure for figure in candidates if figure is not None]


def drawn_runs(runs: Sequence[RunData], limit: int = MAX_DRAWN_RUNS) -> list[RunData]:
    """The runs the figures draw: all of them up to ``limit``; beyond, those with the most telling verdicts."""
    return analyze.most_telling(runs, lambda data: data.verdict, limit)


def thresholds_text(runs: Sequence[RunData], drawn: rules.Thresholds) -> str:
    """The footer's thresholds: the values each run was judged by (the runs that share them named together where
    they differ: each run's recorded ones count), and which set the shared bands are drawn at."""
    groups: dict[rules.Thresholds, list[str]] = {}
    for data in runs:
        groups.setdefault(data.thresholds, []).append(data.label)
    if len(groups) <= 1:
        return "Thresholds: " + values_text(drawn)
    sets = "; ".join(f"{', '.join(labels)}: {values_text(th)}" for th, labels in groups.items())
    return (f"Thresholds differ between runs (each judged by its own, see 'thresholds from'); the bands are drawn at "
            f"{groups[drawn][0]}'s. {sets}")  # fmt: skip


def values_text(th: rules.Thresholds) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in th.to_dict().items())


def build_page(scans: Sequence[analyze.LogScan], now: float | None = None) -> tuple[Page, list[ReportFigure]]:
    """The page (and its figures) for logs scanned with ``frames=True``."""
    runs = collect_runs(scans)
    drawn = drawn_runs(runs)
    thresholds = drawn[0].thresholds if drawn else scans[0].thresholds if scans else rules.Thresholds()
    figures = build_figures(drawn, thresholds)
    headers, rows = comparison(runs)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() if now is None else now))
    logs = ", ".join(Path(scan.path).name for scan in scans)
    bad = sum(scan.bad_lines for scan in scans)
    subtitle = (
        f"{counted(len(runs), 'run')} from {counted(len(scans), 'log')} "
        f"({logs}) · {counted(sum(s.records for s in scans), 'record')}, {counted(bad, 'bad line')} skipped · "
        f"x axis: {x_axis(drawn)} · "
        f"generated {when}"
    )
    if len(drawn) < len(runs):
        subtitle += (f" · the figures draw {len(drawn)} of the {len(runs)} runs, those with the most telling "
                     "verdicts (every run is in the tables)")  # fmt: skip
    page = Page(
        title="moola-watch report",
        subtitle=subtitle,
        runs=[(data.label, data.engine.run_status, data.verdict) for data in runs],
        comparison=Table(headers, rows, badge=frozenset({"verdict"}), row_headings=True),
        figures=figures,
        alerts=Table(
            ALERT_COLUMNS, [[row[c] for c in ALERT_COLUMNS] for row in alert_rows(runs)], badge=frozenset({"severity"})
        ),
        footer=thresholds_text(runs, thresholds) + ". Plots are thinned for drawing (spikes kept); verdicts and "
        "alerts come from every record.",
    )
    return page, figures


def write_report(scans: Sequence[analyze.LogScan], html: Path, png_dir: Path | None = None) -> Written:
    """Write the HTML report (and the PNGs, when ``png_dir`` is given)."""
    page, figures = build_page(scans)
    document = render(page).encode("utf-8")
    try:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_bytes(document)
    except OSError as exc:
        raise ReportError(f"cannot write {html}: {exc.strerror or exc}") from None
    pngs: list[Path] = []
    if png_dir is not None:
        try:
            pngs = write_pngs(figures, png_dir)
        except PngError as exc:
            raise ReportError(str(exc)) from None
    return Written(html, len(document), pngs, len(page.runs))
