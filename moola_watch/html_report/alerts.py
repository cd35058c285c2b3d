"""Alerts: a timeline figure, markers on the other plots, and the rows of the alert list."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import plotly.graph_objects as go

from moola_watch import rules
from moola_watch.counts import counted
from moola_watch.html_report.runs import RunData, alert_span, last_position
from moola_watch.html_report.style import SEVERITY_COLORS, ReportFigure, base_layout
from moola_watch.html_report.text import escaped, short

GRADIENT_RULES = frozenset({rules.VANISHING, rules.EXPLODING, rules.NONFINITE, rules.NORM_LEVEL, rules.AMP_OVERFLOW})
BALANCE_RULES = frozenset({rules.IMBALANCE, rules.COLLAPSE})
RUN_RULES = frozenset({rules.STALE, rules.RUN_FAILED, rules.RUN_INTERRUPTED})
MAX_MARKERS = 200  # alert markers drawn on one figure (the alert list below the plots has them all)
LAYERS_SHOWN = 8  # layer names listed as an alert's evidence


def _color(severity: str) -> str:
    return SEVERITY_COLORS.get(severity, "#555555")


def hover_text(label: str, alert: rules.Alert, several_runs: bool) -> str:
    """An alert's hover label: run, severity, rule, subject, message and recommendation, all escaped."""
    head = f"{escaped(alert.severity)} · {escaped(alert.rule)} ({short(alert.subject)})"
    run = f"{short(label)}<br>" if several_runs else ""
    return f"{run}<b>{head}</b><br>{escaped(alert.message, 300)}<br>→ {escaped(alert.recommendation, 300)}"


def relevant(runs: Sequence[RunData], rule_names: frozenset[str]) -> list[tuple[RunData, rules.Alert]]:
    """(run, alert) for the alerts whose rule is in ``rule_names``."""
    return [(data, a) for data in runs for a in data.alerts if a.rule in rule_names]


def add_markers(
    fig: go.Figure,
    runs: Sequence[RunData],
    axis: str,
    rule_names: frozenset[str],
    y_for: Callable[[rules.Alert], float],
    row: int | None = None,
) -> None:
    """Mark where each alert began: a dotted vertical line through the figure and a hoverable triangle at
    ``y_for(alert)`` (on subplot ``row`` when given)."""
    chosen = [(d, a) for d, a in relevant(runs, rule_names) if alert_span(a, axis, None)[0] is not None]
    chosen = chosen[:MAX_MARKERS]
    if not chosen:
        return
    several = len(runs) > 1
    xs = [alert_span(a, axis, None)[0] for _d, a in chosen]
    for x, (_data, alert) in zip(xs, chosen, strict=True):
        fig.add_shape(
            type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
            line={"color": _color(alert.severity), "width": 1, "dash": "dot"}, opacity=0.7,
        )  # fmt: skip
    trace = go.Scatter(
        x=xs,
        y=[y_for(a) for _d, a in chosen],
        mode="markers",
        name="alerts",
        marker={"symbol": "triangle-down", "size": 12, "color": [_color(a.severity) for _d, a in chosen],
                "line": {"color": "white", "width": 1}},
        hovertext=[hover_text(d.label, a, several) for d, a in chosen],
        hoverinfo="text",
    )  # fmt: skip
    if row is None:
        fig.add_trace(trace)
    else:
        fig.add_trace(trace, row=row, col=1)


def timeline_figure(runs: Sequence[RunData], axis: str) -> ReportFigure | None:
    """Every alert as a bar from where it began to where it resolved (or the run's end, if still firing)."""
    several = len(runs) > 1
    fig = go.Figure()
    categories: list[str] = []
    for data in runs:
        end = last_position(data, axis)
        for alert in data.alerts:
            start, stop = alert_span(alert, axis, end)
            if start is None:
                continue
            name = f"{escaped(alert.rule)} ({short(alert.subject, 32)})"
            category = f"{short(data.label, 32)} · {name}" if several else name
            if category not in categories:
                categories.append(category)
            color = _color(alert.severity)
            fig.add_trace(
                go.Scatter(
                    x=[start, stop], y=[category, category], mode="lines+markers", showlegend=False,
                    line={"color": color, "width": 10}, marker={"size": [12, 6], "color": color},
                    hovertext=hover_text(data.label, alert, several), hoverinfo="text",
                )
            )  # fmt: skip
    if not categories:
        return None
    fig.update_layout(**base_layout(120 + 34 * len(categories), axis))
    fig.update_layout(margin={"l": 260})
    fig.update_yaxes(categoryorder="array", categoryarray=categories[::-1], type="category")
    return ReportFigure(
        "alerts",
        "Alerts over time",
        "Each alert from where it began (large dot) to where it resolved, or to the run's last record while it "
        "still fires; the colour is its severity. Hover for the message and the recommendation.",
        fig,
    )


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def evidence(alert: rules.Alert) -> str:
    """What the alert rests on: the value measured, how many samples showed it, which layers."""
    parts = [f"value {_number(alert.value)}", counted(alert.samples, "sample")]
    if alert.layers:
        more = len(alert.layers) - LAYERS_SHOWN
        names = ", ".join(alert.layers[:LAYERS_SHOWN]) + (f" and {more} more" if more > 0 else "")
        parts.append(f"layers: {names}")
    return "; ".join(parts)


def alert_rows(runs: Sequence[RunData]) -> list[dict[str, str]]:
    """The alert list, one row (raw text, escaped by the page) per alert, worst severity first."""
    rows = []
    for data in runs:
        for alert in data.alerts:
            resolved = rules.position(alert.resolved_epoch, alert.resolved_step) if alert.resolved_step is not None \
                or alert.resolved_epoch is not None else "-"  # fmt: skip
            rows.append(
                {
                    "severity": alert.severity,
                    "state": alert.state
                    if rules.verdict_severity(alert) == alert.severity
                    else f"{alert.state} (recovered: counts as a {rules.verdict_severity(alert)})",
                    "run": data.label,
                    "rule": f"{alert.rule} ({alert.subject})",
                    "since": rules.position(alert.first_epoch, alert.first_step),
                    "resolved": resolved,
                    "message": alert.message,
                    "recommendation": alert.recommendation,
                    "evidence": evidence(alert),
                }
            )
    rank = rules.SEVERITY_RANK
    return sorted(rows, key=lambda r: -rank.get(r["severity"], 0))
