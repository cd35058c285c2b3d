"""Rich renderables of the live view: one run's dashboard, and the one-row-per-run overview of a directory.

Pure rendering of state handed in (:class:`RunView`, :class:`LogView`); the loop that feeds them lives in
:mod:`moola_watch.follow`. Everything from the log is shown through :func:`moola_watch.render.text`.

* :mod:`.state` what is remembered of a log and its runs, and the view's options;
* :mod:`.summary` a run in a few words (verdict, worst alert, age), shared by the dashboard and the overview;
* :mod:`.panels` one run's whole dashboard and its parts (header, panels, layer table);
* :mod:`.fitted` that dashboard fitted to a short terminal, saying what it leaves out;
* :mod:`.directory_overview` one row per run across a directory of logs;
* :mod:`.banner` a line above the live screen about the watcher itself.
"""

from moola_watch.dashboard.banner import Banner
from moola_watch.dashboard.directory_overview import Overview, overview
from moola_watch.dashboard.fitted import Fit, FittedDashboard, Parts, fit_short, left_out
from moola_watch.dashboard.panels import header, run_dashboard, tasks_panel
from moola_watch.dashboard.state import LogView, RunView, ViewOptions

__all__ = [
    "Banner", "Fit", "FittedDashboard", "LogView", "Overview", "Parts", "RunView", "ViewOptions", "fit_short", "header",
    "left_out", "overview", "run_dashboard", "tasks_panel",
]  # fmt: skip
