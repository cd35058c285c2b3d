"""The live dashboard fitted to the terminal: what a short screen keeps, in which order, and what it says it left
out (the real CLI in a real terminal is in test_follow.py)."""

import re

import pytest
from helpers import REPO
from logs import LogBuilder
from rich.console import Console

from moola_watch import dashboard, render, rules
from moola_watch.analyze import scan_log
from moola_watch.dashboard import Fit, FittedDashboard, LogView, Parts, ViewOptions, fit_short, left_out, run_dashboard

SAMPLES = sorted((REPO / "sample_logs").glob("*.jsonl"))
# Three alerts firing and two resolved; panels of 7 rows; a layer table of 3, 5, 7, 9 lines (1 to 4 a side).
PARTS = Parts(firing=3, alerts=5, panel_rows=7, layers=(3, 5, 7, 9))


def test_a_screen_that_holds_it_all_shows_it_all_with_the_recommendations_in_what_is_left():
    assert PARTS.height(PARTS.whole()) == 6 + 9 + 9
    assert fit_short(24, PARTS) == Fit(alerts=5, panel_rows=7, layer_ends=4)
    assert fit_short(27, PARTS) == Fit(alerts=5, panel_rows=7, layer_ends=4, advised=3)
    assert left_out(PARTS, fit_short(24, PARTS)) == []


@pytest.mark.parametrize(
    ("room", "fit", "missing"),
    [
        # One line short: the resolved alerts go first, and a line says so.
        (23, Fit(3, 7, 4), ["2 more alerts"]),
        # The firing alerts, the panels' first rows, then the layers' extremes, before the panels' other rows.
        (13, Fit(3, 3, 1), ["2 more alerts", "4 panel rows", "6 layer rows"]),
        (5, Fit(3, 0, 0), ["2 more alerts", "the gradient and task balance panels", "the layer table"]),
        (4, Fit(2, 0, 0), ["3 more alerts (1 firing)", "the gradient and task balance panels", "the layer table"]),
    ],
)
def test_a_short_screen_keeps_the_firing_alerts_then_the_panels_then_the_layers(room, fit, missing):
    assert fit_short(room, PARTS) == fit
    assert PARTS.height(fit) <= room - 1  # and the line that says what is left out
    assert left_out(PARTS, fit) == missing


def test_no_alert_still_says_none_and_a_run_without_layers_misses_no_table():
    parts = Parts(firing=0, alerts=0, panel_rows=1, layers=())
    assert parts.height(Fit()) == 2  # "Alerts" and "none"
    assert fit_short(5, parts) == Fit(panel_rows=1) and left_out(parts, Fit(panel_rows=1)) == []


def lines_of(console: Console, renderable) -> list[str]:
    return ["".join(s.text for s in line).rstrip() for line in console.render_lines(renderable, pad=False)]


@pytest.mark.parametrize("log", SAMPLES, ids=lambda path: path.stem)
@pytest.mark.parametrize("size", [(80, 24), (80, 16), (60, 20), (100, 30), (120, 40), (200, 50)])
def test_the_fitted_dashboard_fits_and_shows_every_firing_alert(log, size):
    width, height = size
    scan = scan_log(log)
    run = scan.current.run.run
    view, options = LogView(scan), ViewOptions(now=scan.current.run.last_time)
    console = Console(width=width, height=height, color_system=None, legacy_windows=False)
    fitted = lines_of(console, FittedDashboard(view, run, options))
    whole = lines_of(console, run_dashboard(view, run, options))
    assert len(fitted) <= height and all(len(line) <= width for line in fitted), "\n".join(fitted)
    if len(whole) <= height:
        assert fitted == whole  # where it all fits, as printed
        return
    screen = "\n".join(fitted)
    layers = next(i for i, line in enumerate(whole) if line.startswith("Layers ("))
    if fitted[:layers] == whole[:layers]:  # all but some layers fit: as printed, with fewer rows in the layer table
        assert fitted[layers].startswith("Layers (") and len(fitted) > layers + 5, screen
        return
    for alert in scan.engines[run].firing():
        assert re.search(rf"^ {alert.severity} +{alert.rule} +{re.escape(alert.subject)} ", screen, re.M), screen
    if fitted[-1].startswith("… "):  # the line saying what is left out: its advice first, whatever is cut
        assert fitted[-1].startswith("… not shown (a taller terminal or --once shows it): "), screen
    if "panel rows" in fitted[-1]:
        assert re.search(r"more rows? ─", screen), screen


def test_rows_a_short_screen_has_to_spare_show_the_firing_alerts_recommendation_whole(tmp_path):
    """At 100x28 the short dashboard left rows blank while the collapse's recommendation, the weights to set, was
    cut to one line ("set t…"): those rows now carry it whole."""
    from logs import collapse_scenario

    scan = scan_log(collapse_scenario().write(tmp_path / "collapse.jsonl"))
    run = scan.current.run.run
    view, options = LogView(scan), ViewOptions(now=scan.current.run.last_time)
    console = Console(width=100, height=28, color_system=None, legacy_windows=False)
    screen = lines_of(console, FittedDashboard(view, run, options))
    assert len(screen) <= 28 and len(lines_of(console, run_dashboard(view, run, options))) > 28  # the short one
    (collapse,) = [alert for alert in scan.engines[run].firing() if alert.rule == "collapse"]
    words = " ".join(" ".join(screen).split())
    assert " ".join(collapse.recommendation.split()) in words, "\n".join(screen)


def test_a_narrow_task_balance_panel_cuts_task_names_never_numbers():
    """A review's case: at 80 columns a dominant task's 2.521e+04 read ``2.…``: the smallest at a glance."""
    names = ["a_rather_long_task_name_for_classification", "regression_of_the_price_target_long", "c"]
    log = LogBuilder().start()
    for i in range(1, 12):
        log.add("task_balance", epoch=i, step=i * 10, norms=dict(zip(names, (279.5, 2.521e4, 167.6), strict=True)),
                shares=dict(zip(names, (-0.0017, 0.95, 0.05), strict=True)))  # fmt: skip
    engine = rules.replay(log.records)
    console = Console(width=40, record=True)
    console.print(dashboard.tasks_panel(engine, engine.last_balance, dashboard.RunView(), short=True))
    shown = console.export_text()
    for value in ("279.5", "2.521e+04", "167.6", "-0.0017", "0.95"):
        assert value in shown, shown
    assert "a_rather_long…" in shown, shown


def test_at_60_columns_the_alert_messages_and_task_names_have_room(tmp_path):
    """A review's case, a 60-column terminal: the alerts table's four narrow columns (a long task name among them)
    left the message one cell wide, a letter a line; and the task balance panel, beside the gradients panel, cut
    the task names to two letters. The alerts now stack those four columns in one, and the panels stand one
    above the other below 80 columns."""
    names = ["quadrant class", "régression|mean", "rank.score,pairwise", "aux ✓"]
    log = LogBuilder().start()
    for i in range(1, 12):
        log.grad(i, 0.3, 0.5)
        log.add("task_balance", epoch=i, step=i * 10, norms=dict(zip(names, (0.0017, 7.4, 0.96, 0.96), strict=True)),
                shares=dict(zip(names, (0.0001, 0.92, 0.04, 0.04), strict=True)))  # fmt: skip
    scan = scan_log(log.write(tmp_path / "run.jsonl"))
    run = scan.current.run.run
    view, options = LogView(scan), ViewOptions(now=scan.current.run.last_time)
    lines = lines_of(Console(width=60, color_system=None, legacy_windows=False), run_dashboard(view, run, options))
    assert all(len(line) <= 60 for line in lines), "\n".join(lines)
    screen = "\n".join(lines)
    assert re.search(r"│ TASK COLLAPSE: \S+", screen) or re.search(r"│ \w+ task dominated", screen), screen
    for name in names:
        assert re.search(rf"│\s+{re.escape(name)}\s+\d", screen), (name, screen)


def test_at_40_columns_each_short_alert_line_keeps_room_for_its_message(tmp_path):
    """A review's case: at 40 columns the short dashboard's alert lines held severity, rule and a long task name,
    and no message at all. Those three are now cut to leave the message its cells."""
    log = LogBuilder().start()
    names = ["分類タスク用の非常に長い名前のヘッド", "regression_of_the_very_long_target"]
    for i in range(1, 12):
        log.grad(i, 0.3, 0.5)
        log.add("task_balance", epoch=i, step=i * 10, norms=dict(zip(names, (0.7, 137.0), strict=True)),
                shares=dict(zip(names, (0.0, 1.0), strict=True)))  # fmt: skip
    scan = scan_log(log.write(tmp_path / "run.jsonl"))
    run = scan.current.run.run
    view, options = LogView(scan), ViewOptions(now=scan.current.run.last_time)
    console = Console(width=40, height=24, color_system=None, legacy_windows=False)
    screen = lines_of(console, FittedDashboard(view, run, options))
    alerts = screen[screen.index("Alerts") + 1 :]
    (collapse,) = [line for line in alerts if "TASK COLLAPSE" in line]
    assert len(screen) <= 24 and all(len(line) <= 40 for line in screen), "\n".join(screen)
    assert collapse.rstrip().endswith(("…", "TASK COLLAPSE:")) or "TASK COLLAPSE: " in collapse, collapse


def test_a_long_run_id_folds_in_its_column_and_keeps_analyzes_alerts_table_wide():
    """analyze's alerts name their run: a 43-character id folds at 24 cells, as before the table learned its
    narrow layout, instead of taking the room that keeps the four key columns beside the message."""
    run = "enhanced_simple_lstm-20261130-101332-9713-x"
    alert = rules.replay(LogBuilder(run).start().grad(1, 0.3, 40.0, {"a": 40.0}).grad(2, 0.3, 40.0, {"a": 40.0})
                         .records).alerts[0]  # fmt: skip
    lines = lines_of(Console(width=120, color_system=None), render.alerts_table([(run, alert)], show_run=True))
    header = next(line for line in lines if "state" in line)
    assert "┃ state" in header and "message / recommendation" in header, "\n".join(lines)
    assert all(len(line) <= 120 for line in lines) and any("│ enhanced_simple_lstm-202 │" in line for line in lines)
    assert not any(run in line for line in lines)  # folded, not whole on one line
