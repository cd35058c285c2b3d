"""The report's figures as PNG files (``--png DIR``), drawn by the same plotly figures through kaleido.

kaleido renders in a headless Chromium it finds on the machine (``scripts/setup-browser.sh`` installs one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from moola_watch.html_report.style import WIDTH, ReportFigure
from moola_watch.html_report.text import escaped


class PngError(Exception):
    """The PNGs could not be written: no browser for kaleido, or the directory is not writable."""


def titled(figure: ReportFigure) -> go.Figure:
    """A copy of the figure with its heading inside (a PNG stands alone, without the page around it)."""
    fig = go.Figure(figure.figure)
    top = fig.layout.margin.t or 30
    fig.update_layout(title={"text": escaped(figure.title), "x": 0.01, "font": {"size": 16}}, margin={"t": top + 40})
    fig.update_layout(height=(fig.layout.height or 450) + 40)
    return fig


def write_pngs(figures: Sequence[ReportFigure], directory: Path) -> list[Path]:
    """One ``<slug>.png`` per figure in ``directory`` (created); returns the paths written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PngError(f"cannot create {directory}: {exc.strerror or exc}") from None
    paths = [directory / f"{figure.slug}.png" for figure in figures]
    if not figures:
        return paths
    try:
        figs = [titled(f) for f in figures]
        heights = [fig.layout.height for fig in figs]  # kaleido's default height would squash tall figures
        pio.write_images(figs, paths, width=WIDTH, height=heights, scale=1, validate=False)
    except (RuntimeError, OSError, ValueError) as exc:
        raise PngError(
            f"cannot write PNGs with kaleido ({type(exc).__name__}: {exc}); it needs Chromium: "
            "run scripts/setup-browser.sh or apt-get install chromium"
        ) from None
    return paths
