"""The HTML document: one file, no network. plotly.js is inlined once; each figure is inert JSON data.

Every string from a log is entity-escaped before it reaches the page (``text.escaped``), and the figure JSON
has ``<``, ``>`` and ``&`` as ``\\u`` escapes, so nothing in a log can close a tag or open one. As a second
wall, a Content-Security-Policy lets only the page's own two scripts run (by hash: no inline event
handler, no injected script) and forbids every network load.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.io as pio
from plotly.offline import get_plotlyjs

from moola_watch.html_report.style import SEVERITY_COLORS, ReportFigure
from moola_watch.html_report.text import escaped

BOOT_JS = """\
document.querySelectorAll("div.plot").forEach(function (div) {
  var figure = JSON.parse(document.getElementById("data-" + div.id).textContent);
  Plotly.newPlot(div, figure.data, figure.layout, {responsive: true, displaylogo: false});
});
"""
VERDICT_CLASSES = {**{s: f"sev-{s}" for s in SEVERITY_COLORS}, "healthy": "ok"}

CSS = """\
:root { --fg: #1d232a; --muted: #5b6570; --line: #e3e7eb; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header { background: #16202b; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 20px; font-weight: 600; }
header p { margin: 0; color: #b8c4cf; }
nav { position: sticky; top: 0; z-index: 10; background: #fff; border-bottom: 1px solid var(--line);
      padding: 8px 28px; display: flex; gap: 18px; flex-wrap: wrap; }
nav a { color: #1f5fa8; text-decoration: none; font-weight: 500; }
main { padding: 8px 28px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin: 18px 0; padding: 14px 18px; }
section h2 { margin: 0 0 4px; font-size: 17px; }
p.caption { margin: 0 0 8px; color: var(--muted); max-width: 110ch; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f0f3f6; font-weight: 600; white-space: nowrap; }
tbody th { background: #f8fafb; font-weight: 500; color: var(--muted); width: 1%; }
.scroll { overflow-x: auto; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #fff; background: #6c757d; white-space: nowrap; }
.badge.ok { background: #2e7d32; } .badge.sev-info { background: #1f77b4; }
.badge.sev-warning { background: #e6a100; } .badge.sev-error { background: #d62728; }
.badge.sev-critical { background: #7b1fa2; }
.runs { display: flex; gap: 10px; flex-wrap: wrap; margin-top: 10px; }
.run-chip { background: #223140; border-radius: 6px; padding: 6px 10px; }
.run-chip .name { font-weight: 600; margin-right: 8px; }
.rec { color: #1f5fa8; }
.empty { color: var(--muted); font-style: italic; }
footer { color: var(--muted); padding: 0 28px 30px; font-size: 12px; }
"""


@dataclass(frozen=True)
class Table:
    """A table of raw text cells (escaped when written). Cells of a ``badge`` column, or of a row whose first cell
    is in ``badge``, are drawn as coloured badges; the first column is a heading when ``row_headings``."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    badge: frozenset[str] = frozenset()
    row_headings: bool = False


@dataclass(frozen=True)
class Page:
    """What the page holds, all as plain text or figures."""

    title: str
    subtitle: str
    runs: Sequence[tuple[str, str, str]]  # (label, status, verdict) for the header
    comparison: Table
    figures: Sequence[ReportFigure]
    alerts: Table
    footer: str


def script_hash(source: str) -> str:
    """The CSP source expression that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def figure_json(figure: ReportFigure) -> str:
    """The figure as JSON that cannot end its ``<script>`` element: ``<``, ``>`` and ``&`` as ``\\u`` escapes
    (they only occur inside JSON strings, where the escapes decode to the same text)."""
    text = pio.to_json(figure.figure, validate=False, pretty=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plotly_js() -> str:
    """plotly.js as shipped with the plotly package, safe to inline (no ``</script`` inside)."""
    return re.sub(r"</(script)", r"<\\/\1", get_plotlyjs(), flags=re.IGNORECASE)


def badge(value: str) -> str:
    return f'<span class="badge {VERDICT_CLASSES.get(value, "")}">{escaped(value)}</span>'


def table_html(table: Table) -> str:
    if not table.rows:
        return '<p class="empty">None.</p>'
    head = "".join(f"<th>{escaped(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for index, (header, cell) in enumerate(zip(table.headers, row, strict=True)):
            if index == 0 and table.row_headings:
                cells.append(f'<th scope="row">{escaped(cell)}</th>')
            elif header in table.badge or (index > 0 and row[0] in table.badge):
                cells.append(f"<td>{badge(cell)}</td>")
            elif header == "recommendation":
                cells.append(f'<td class="rec">{escaped(cell, 2000)}</td>')
            else:
                cells.append(f"<td>{escaped(cell, 2000)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure_html(figure: ReportFigure) -> str:
    slug = escaped(figure.slug)
    return (
        f'<section id="{slug}"><h2>{escaped(figure.title)}</h2><p class="caption">{escaped(figure.caption, 2000)}</p>'
        f'<div class="plot" id="plot-{slug}"></div>'
        f'<script type="application/json" id="data-plot-{slug}">{figure_json(figure)}</script></section>'
    )


def render(page: Page) -> str:
    """The whole document."""
    js = plotly_js()
    policy = (
        f"default-src 'none'; script-src {script_hash(js)} {script_hash(BOOT_JS)}; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:"
    )
    chips = "".join(
        f'<div class="run-chip"><span class="name">{escaped(label)}</span>{escaped(status)} {badge(verdict)}</div>'
        for label, status, verdict in page.runs
    )
    links: dict[str, str] = {}  # link text -> first section with that heading (one link for all heatmaps)
    for slug, text in [("runs", "Runs"), *((f.slug, f.title.split(" · ")[0]) for f in page.figures)]:
        links.setdefault(text, slug)
    links.setdefault("Alerts", "alert-list")
    nav = "".join(f'<a href="#{escaped(slug)}">{escaped(text)}</a>' for text, slug in links.items())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escaped(page.title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{escaped(page.title)}</h1><p>{escaped(page.subtitle, 2000)}</p><div class="runs">{chips}</div></header>
<nav>{nav}</nav>
<main>
<section id="runs"><h2>Runs</h2>{table_html(page.comparison)}</section>
{"".join(figure_html(f) for f in page.figures)}
<section id="alert-list"><h2>Alerts</h2><p class="caption">Every alert the rules raised, worst first, with what it
rests on and what to do.</p>{table_html(page.alerts)}</section>
</main>
<footer>{escaped(page.footer, 4000)}</footer>
<script>{js}</script>
<script>{BOOT_JS}</script>
</body>
</html>
"""
