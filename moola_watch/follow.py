"""``moola-watch follow``: the loop that tails logs, applies the rules and shows the result.

Three outputs of the same stream: a Rich Live dashboard on a terminal; one plain line per alert transition
or run-status change when piped; one JSON object per event with ``--json`` (and a summary object at exit).
Reading never waits on drawing: all new data is consumed first, and redraws are throttled to ``MAX_FPS``.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from moola_watch import rules, schema
from moola_watch.analyze import LogScan, alert_json, not_a_log, read_sources, why_not_a_log
from moola_watch.counts import counted
from moola_watch.dashboard import Banner, FittedDashboard, LogView, ViewOptions, overview, run_dashboard
from moola_watch.exit_codes import EXIT_ALERT, EXIT_OK, EXIT_USAGE, bad_lines, exit_code, runs_exit_code, worst
from moola_watch.notify import Notifier
from moola_watch.render import stdout_gone
from moola_watch.rules import AlertEvent, Thresholds
from moola_watch.sources import UnreadableLog, directory_logs, file_compression, missing_log_hint, without_copies
from moola_watch.tail import Item, LogTail, Notice, RecordItem, Waker
from moola_watch.textsafe import inert, json_line
from moola_watch.writer_process import log_writer_gone

MAX_FPS = 10.0
AGE_REFRESH_S = 1.0  # redraw at least this often so "last record N s ago" and staleness stay true


@dataclass(frozen=True)
class FollowOptions:
    from_end: bool = False
    poll: bool = False
    interval: float = 0.25  # seconds between safety-net stats (the only wake-up under --poll)
    json: bool = False
    once: bool = False
    exit_on_end: bool = False
    fail_on: str = "error"
    max_bad_lines: int = 0  # a log with more bad lines than this (cut-off, repeated aside) fails, as check
    run: str | None = None
    top: int = 4
    layers: str | None = None
    overridden: frozenset[str] = frozenset()  # thresholds a flag or config set: they beat a run's recorded ones
    floors: dict[str, float] = field(default_factory=dict)  # training floors a flag or config gave (task -> loss)


def alert_event(path: Path, run: str | None, event: AlertEvent, state: rules.RunState | None = None) -> dict[str, Any]:
    """A transition as ``--json`` prints it and notifications carry it: the alert, its log, from its run's
    ``state`` (None: unknown) the host its trainer runs on and when it started (its run_start's), the rank whose
    own log it is (per_rank; else None), and where it stands."""
    alert = event.alert
    resolved = alert.state == rules.RESOLVED
    host = state.writer[0] if state is not None else None
    return {
        "event": "alert",
        "log": str(path),
        "host": host if isinstance(host, str) else None,
        "rank": state.rank if state is not None else None,
        "run_started": state.started if state is not None else None,
        **alert_json(run, alert),
        "escalated": event.escalated,
        "epoch": alert.resolved_epoch if resolved else alert.last_epoch,
        "step": alert.resolved_step if resolved else alert.last_step,
    }


class WholeLog:
    """A log that cannot grow, read once to its end and decompressed: a compressed file (gzip, bzip2, xz), with the
    rotated parts before it. Polled like a :class:`~moola_watch.tail.LogTail`: about ``BATCH`` items a poll, and
    :attr:`behind` while more are waiting, so that a big file is not held in memory whole. One of a folder's logs
    (``in_folder``) that cannot be read on (zstd, damaged data) ends in an ``unreadable`` notice, its records
    before that kept: the folder's other logs are still followed."""

    BATCH = 10_000  # items a poll

    def __init__(self, parts: list[Path], name: str, *, in_folder: bool = False) -> None:
        self.name = name
        self.in_folder = in_folder
        self._items = read_sources(parts, name, None)
        self.behind = True

    def poll(self) -> list[Item]:
        """The next items; none once the file is read. Raises :class:`~moola_watch.sources.UnreadableLog` (zstd,
        damaged data) unless ``in_folder``."""
        batch: list[Item] = []
        try:
            batch.extend(islice(self._items, self.BATCH))
        except UnreadableLog as exc:
            if not self.in_folder:
                raise
            self._items = iter(())
            why = str(exc).removeprefix(f"{self.name} ")
            batch.append(Notice(self.name, "unreadable", f"cannot be read to its end: it {why}; the folder's other "
                                                         "logs are still followed"))  # fmt: skip
        self.behind = len(batch) == self.BATCH
        return batch


def unjudged(scan: LogScan) -> str:
    """Why a followed log that holds not one valid record cannot be judged (``check``'s exit 2), in one line: it
    is not a log (or one of a newer moola), or holds nothing yet."""
    if scan.bad_lines:
        return not_a_log(scan.path, [scan])
    return f"{scan.path} holds no record yet: not a log to check"


class Follower:
    """Follows one log file, or every ``*.jsonl`` in a directory (new ones picked up as they appear)."""

    def __init__(
        self,
        target: Path,
        thresholds: Thresholds,
        options: FollowOptions,
        console: Console,
        stdout: BinaryIO | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.target = target
        self.directory = target if target.is_dir() else None
        self.thresholds = thresholds
        self.options = options
        self.console = console
        self.stdout = stdout or sys.stdout.buffer
        self.notifier = notifier
        self._held_notices: list[str] = []  # notices said after the dashboard closes
        self._noted: set[str] = set()  # notes said once (:meth:`_note_once`)
        self._foreign: set[Path] = set()  # files said to hold lines but no record (said once each)
        self.layers = re.compile(options.layers) if options.layers else None
        self.tails: dict[Path, LogTail | WholeLog] = {}
        self.views: dict[Path, LogView] = {}
        self._statuses: dict[tuple[Path, str], str] = {}
        self._continued_in: dict[str, Path] = {}  # run id -> the log its continued run_start came in
        self._writers_checked_at = -math.inf  # when the runs' writers were last looked for (unix seconds)
        self._started = False
        self.behind = False  # some log has more data waiting than the last pump read
        self._read_at = 0.0  # when the log being read now was read (unix seconds)
        self.live_mode = console.is_terminal and not options.json
        watch_dirs = [self.directory or target.parent]
        self.waker = Waker(watch_dirs, poll=options.poll, interval=options.interval)
        if self.waker.failure:
            self._notice(Notice(str(target), "poll_fallback", self.waker.failure))

    # ------------------------------------------------------------------ reading

    def _discover(self) -> None:
        if self.directory is None and self.target.is_dir():
            self._follow_as_folder()
        for path, older in self._logs():
            if path not in self.tails:
                # In a directory, logs that appear later are new runs: read them from their start.
                from_end = self.options.from_end and not self._started
                self.views[path] = LogView(
                    LogScan(str(path), self.thresholds, overridden=self.options.overridden, floors=self.options.floors)
                )
                if file_compression(path) is not None:  # it cannot grow: read whole, as check reads it
                    parts = [] if from_end else without_copies([*older, path], note=self._note_once)
                    self.tails[path] = WholeLog(parts, str(path), in_folder=self.directory is not None)
                    continue
                self.tails[path] = LogTail(path, from_end=from_end)
                if older and not from_end:  # its rotated parts first, oldest first: the log as check reads it
                    self._read_at = time.time()
                    older = without_copies([*older, path], note=self._note_once)[:-1]
                    try:
                        for item in read_sources(older, str(path), None):
                            self._take(path, item)
                    except UnreadableLog as exc:  # a damaged compressed part (logrotate's compress): said, and the
                        # log's own file still followed, as the folder's other logs are
                        why = f"cannot be read whole: {exc}; the rest of it is still followed"
                        self._take(path, Notice(str(path), "unreadable", why))

    def _follow_as_folder(self) -> None:
        """The target is a folder now, not when following began (``follow runs/`` started before the trainer made
        it): its logs are followed from here on, each from its start, as a folder given from the start is."""
        self.directory = self.target
        self.tails.pop(self.target, None)
        self.views.pop(self.target, None)
        self.waker.watch(self.target)

    def _logs(self) -> list[tuple[Path, list[Path]]]:
        """The logs followed (a folder's ``*.jsonl``, or the file given), each with its older rotated parts in a
        folder (``run.jsonl.2.gz``, ``run.jsonl.1``: see :mod:`moola_watch.sources`)."""
        if self.directory is None:
            return [(self.target, [])]
        try:
            logs = directory_logs(self.directory, note=self._note_once)
        except ValueError:  # two files that would be the same part: their logs are followed alone
            return [(path, []) for path in sorted(self.directory.glob("*.jsonl"))]
        newest = [(log, [part for part in parts if part != log]) for log, parts in logs]
        return [(log, older) for log, older in newest if log.name.endswith(".jsonl")]

    def _note_once(self, message: str) -> None:
        """A note about how the folder's logs are read (a log's numbered and dated parts ordered by time), said
        once however often the folder is looked at; on a terminal, after the dashboard closes."""
        if message in self._noted:
            return
        self._noted.add(message)
        if self.live_mode:
            self._held_notices.append(message)
        else:
            self._notice(Notice(str(self.directory), "rotated_parts", message))

    def pump(self) -> bool:
        """Consume everything new in every log; emit transitions. True if any record or bad line arrived."""
        self._discover()
        changed = False
        for path, tail in self.tails.items():
            changed |= self._read(path, tail)
        self.behind = any(tail.behind for tail in self.tails.values())
        return changed

    def _read(self, path: Path, tail: LogTail) -> bool:
        """Consume what one log has new; True if any record or bad line arrived."""
        self._read_at = time.time()  # one clock reading per read, not per record: it dates them all
        changed = False
        for item in tail.poll():
            changed |= self._take(path, item)
        view = self.views[path]
        if not view.history_read and view.scan.records and not tail.behind:
            view.end_history(self._read_at)  # whenever the file appeared: its first read is its history
        foreign = not view.scan.records and view.scan.bad_lines and not tail.behind and not self.options.once
        if foreign and path not in self._foreign:  # (--once says it as its error)
            self._foreign.add(path)  # piped or --json, nothing else would say so until Ctrl-C (the live view does)
            self._notice(Notice(str(path), "not_a_log", f"{why_not_a_log([view.scan])}; still watching it for records"))
        return changed

    def _take(self, path: Path, item: Item) -> bool:
        view = self.views[path]
        events = view.scan.add(item)
        if isinstance(item, Notice):
            if item.event == "unreadable":
                view.unreadable = item.message
            self._notice(item)
            return False
        run = None
        if isinstance(item, RecordItem):
            view.observe(item.record, self._read_at)
            run = view.scan.run_key(item.record["run"])
            if item.record["kind"] == schema.RUN_START and item.record.get(schema.CONTINUED) is True:
                self._continued_in[item.record["run"]] = path
                self._mark_continued()
        self._alerts(path, run, events)
        return True

    def _mark_continued(self) -> None:
        """A run whose ``continued`` run_start came in one log goes on there (its log was rotated to a name this
        folder also follows, read as a log of its own): where it is still running in another log, that part of
        it has ended, and is not stale. Also on every tick: the rotated file may be found after the new one."""
        for run, path in self._continued_in.items():
            for other, view in self.views.items():
                if other != path:
                    for engine in view.scan.engines.values():
                        if engine.run.run == run and engine.run.status == "running" and not engine.run.continued_in:
                            engine.run.continued_in = path.name

    def _check_writers(self, now: float) -> None:
        """A run whose writer has exited without a run_end has died. Judged at most every ``AGE_REFRESH_S`` (it
        costs a read of ``/proc`` per running run), and only on what the writer left: its last lines were
        written before it exited, so the log is read to its end before the run is called dead."""
        if now < self._writers_checked_at + AGE_REFRESH_S:
            return
        self._writers_checked_at = now
        for path, view in self.views.items():
            running = [e for e in view.scan.engines.values() if e.run_status in ("running", "stale")]
            if not any(log_writer_gone(path, *engine.run.writer) for engine in running):
                continue
            self._read(path, self.tails[path])
            while self.tails[path].behind:
                self._read(path, self.tails[path])
            for run, event in view.scan.check_writers(log_writer_gone, now):
                self._alerts(path, run, [event])

    def _followed(self, path: Path, run: str | None) -> bool:
        """Whether ``run`` of the log at ``path`` is one this follower reports: every run, or the ``--run`` one
        (by run id or log name, as the dashboard picks it)."""
        wanted = self.options.run
        return wanted is None or run is None or wanted in (run, path.stem)

    def tick(self, now: float) -> None:
        """Staleness and run-status changes, judged against the wall clock ``now``; the notifier's notices."""
        if self.notifier is not None:
            self.notifier.tick()
            self._notify_notices(self.notifier.drain())
        self._mark_continued()
        self._check_writers(now)
        for path, view in self.views.items():
            for run, engine in view.scan.engines.items():
                if engine.run.superseded or engine.run.continued_in:  # a run_died it had resolves
                    self._alerts(path, run, engine.check_writer(None, now))
                self._alerts(path, run, engine.check_resumed(now))
                if self.options.once or view.stale_judged(run, now):  # --once cannot wait for a next record
                    gap = view.longest_gap(run, engine.run.longest_gap)
                    self._alerts(path, run, engine.check_stale(view.writer_now(run, now), gap))
                status = engine.run_status
                if self._statuses.get((path, run)) != status:
                    self._statuses[(path, run)] = status
                    self._emit_status(path, run, status)

    # ------------------------------------------------------------------ output

    def _write_json(self, obj: dict[str, Any]) -> None:
        try:
            self.stdout.write(json_line(obj))
            self.stdout.flush()
        except BrokenPipeError:
            if not self.options.once:
                raise  # following stops with its reader
            stdout_gone()  # a one-shot read is judged to its end, as check judges it

    def _plain(self, line: str) -> None:
        if not self.live_mode:
            self.console.print(inert(line, limit=4000), markup=False, highlight=False, soft_wrap=True)

    def waiting_hint(self) -> str:
        """How a log that does not exist yet is waited for, in words."""
        folder = self.directory or self.target.parent
        how = f"checking every {self.options.interval:g} s"
        if self.directory is None and (hint := missing_log_hint(self.target)):
            how += inert(hint)
        if not folder.is_dir():
            how += f" (its directory {inert(folder)} does not exist yet either)"
        elif self.waker.mode == "watchdog":
            how += f" and at once on any change in {inert(folder)}"
        return how + "; Ctrl-C to stop"

    def _notice(self, notice: Notice) -> None:
        if notice.event == "waiting":
            notice = notice._replace(message=f"{notice.message}, {self.waiting_hint()}")
        if self.options.json:
            self._write_json({"event": "notice", "log": notice.path, "kind": notice.event, "message": notice.message})
        elif not self.live_mode:
            print(
                f"moola-watch: {inert(notice.path)}: {inert(notice.message, limit=2000)}", file=sys.stderr, flush=True
            )
        elif notice.event == "unreadable":  # the dashboard shows what was read of it: why no more, after it closes
            self._held_notices.append(f"{notice.path}: {notice.message}")

    def _notify_notices(self, messages: list[str]) -> None:
        """The notifier's notices about its sinks; the dashboard shows none, so there they wait for its end."""
        if self.live_mode:
            self._held_notices += messages
            return
        for message in messages:
            self._notice(Notice(str(self.target), "notify", message))

    def _alerts(self, path: Path, run: str | None, events: list[AlertEvent]) -> None:
        if not self._followed(path, run):
            return
        for event in events:
            alert = event.alert
            engine = self.views[path].scan.engines.get(run) if run is not None else None
            obj = alert_event(path, run, event, engine.run if engine is not None else None)
            if self.notifier is not None:  # when it happened: its run's latest record's time
                self.notifier.send(obj, engine.run.last_time if engine is not None else None)
            if self.options.json:
                self._write_json(obj)
            else:
                if alert.state == rules.RESOLVED:
                    at = rules.position(alert.resolved_epoch, alert.resolved_step)
                else:
                    at = rules.position(alert.last_epoch, alert.last_step)
                self._plain(
                    f"{time.strftime('%H:%M:%S')} {alert.state.upper():<8} {alert.severity:<8} "
                    f"{alert.rule} ({alert.subject}) at {at}: {alert.message}"
                    + (f" -> {alert.recommendation}" if alert.state != rules.RESOLVED else "")
                    + f"  [{path.name}]"
                )

    def _emit_status(self, path: Path, run: str, status: str) -> None:
        if not self._followed(path, run):
            return
        if self.options.json:
            self._write_json({"event": "status", "log": str(path), "run": run, "status": status})
        else:
            self._plain(f"{time.strftime('%H:%M:%S')} run {run} is {status}  [{path.name}]")

    def render(self, now: float, fit: bool = False) -> RenderableType:
        """What is shown at ``now``; with ``fit``, a run's dashboard is fitted to the screen (the live view, where
        what does not fit is cut off), else whole (printed, it scrolls). The live view opens with a line while a
        notification destination fails: the notices that say why wait for the dashboard to close."""
        shown = self._view(now, fit)
        failing = self.notifier.failing() if fit and self.notifier is not None else []
        if not failing:
            return shown
        line = (f"NOTIFICATIONS FAILING: {inert(', '.join(failing))}; why, and what was not delivered, is printed "
                "when the dashboard closes")  # fmt: skip
        return Banner(Text(line, style="bold red"), shown)

    def _view(self, now: float, fit: bool) -> RenderableType:
        options = ViewOptions(top=self.options.top, layers=self.layers, now=now)
        focus = self._focus()
        if focus is not None:
            view, run = focus
            return FittedDashboard(view, run, options) if fit else run_dashboard(view, run, options)
        if self.directory is None and not self.target.exists():
            hint = f"it does not exist yet; {self.waiting_hint()}"
            return Text(f"waiting for records in {inert(self.target)} ({hint})", style="dim")
        if self.options.run is not None and any(view.scan.engines for view in self.views.values()):
            return Text(f"{inert(self._missing_run())}; waiting for it …", style="dim")
        if self.directory is None and self.views[self.target].scan.bad_lines:  # lines, none of them a record
            return Text(inert(unjudged(self.views[self.target].scan), limit=4000), style="red")
        if self.directory is None:
            return Text(f"waiting for records in {inert(self.target)} …", style="dim")
        return overview(list(self.views.values()), options)

    def _missing_run(self) -> str:
        """``--run ID`` names no run the logs hold (yet): say which they do hold, as ``check --run`` does."""
        runs = ", ".join(dict.fromkeys(run for view in self.views.values() for run in view.scan.engines)) or "none"
        return f"no run {self.options.run!r} in {self.target} (runs: {runs})"

    def _focus(self) -> tuple[LogView, str] | None:
        """The run the dashboard shows: ``--run``, or the only log's latest run; None for an overview."""
        wanted = self.options.run
        for view in self.views.values():
            for run in view.scan.engines:
                if wanted is not None and (run == wanted or Path(view.scan.path).stem == wanted):
                    return view, run
        if wanted is None and self.directory is None:
            view = self.views[self.target]
            current = view.scan.current
            if current is not None and current.run.run is not None:
                return view, current.run.run
        return None

    # ------------------------------------------------------------------ loop

    def ended(self) -> bool:
        """Every run has ended: with a run_end, superseded, or gone stale (a killed trainer writes no run_end,
        and ``--exit-on-end`` must not wait for one forever)."""
        engines = [e for view in self.views.values() for e in view.scan.engines.values()]
        return bool(engines) and all(e.run_status != "running" for e in engines)

    def exit_code(self) -> int:
        """``check``'s exit code for what was followed (``--run``: that run's): a log of a folder without a valid
        record (another tool's file, or one still empty) is not a log, and one that could not be read to its end
        (damaged compressed data) is not judged, as ``check DIR`` says (2)."""
        wanted = self.options.run
        return worst(
            EXIT_USAGE
            if (wanted is None and not view.scan.records) or view.unreadable
            else exit_code(view.scan, runs, self.options.fail_on, self._bad_lines_allowed(runs))
            for path, view in self.views.items()
            for runs in [self._followed_runs(path, view)]
        )

    def run_verdicts(self) -> list[str]:
        """A line for each log whose verdicts the view does not give whole: a log of several runs names those whose
        verdict is not ok (they fail the check, or measured nothing), or says every one is ok: the dashboard shows
        one run, and exit 1 beside a healthy header must say which run it is for. Following a folder, also a log
        of one run that is not ok, and a file with no valid record (``check``'s exit 2): every log and run that
        fails is named, as ``check DIR`` lists them (the overview's rows are cut to the terminal). Nothing for a
        log of one run followed alone, or under ``--run`` (that run is the one shown)."""
        if self.options.run is not None:
            return []
        lines = []
        for view in self.views.values():
            scan = view.scan
            if view.unreadable:
                lines.append(f"{scan.path} {view.unreadable.partition('; ')[0]}: not judged")
                continue
            if not scan.records:
                if self.directory is not None:
                    lines.append(unjudged(scan))
                continue
            several = len(scan.engines) > 1
            if not several and self.directory is None:
                continue
            bad = [
                f"{run} (verdict={scan.run_report(run)['verdict']}"
                + (f", fails --fail-on {self.options.fail_on})" if code == EXIT_ALERT else ")")
                for run in scan.engines
                if (code := runs_exit_code(scan, [run], self.options.fail_on)) != EXIT_OK
            ]
            where = f"{counted(len(scan.engines), 'run')} in {scan.path}"
            if bad:
                lines.append(f"{where}; not ok: {', '.join(bad)}")
            elif several:
                lines.append(f"{where}; every run's verdict is ok")
        return lines

    def bad_line_verdicts(self) -> list[str]:
        """For each log whose bad lines fail it (more than ``--max-bad-lines``), one line saying so: exit 1 beside
        healthy runs must say why."""
        judged = [
            (view.scan.path, bad_lines(view.scan, self._bad_lines_allowed(runs)))
            for path, view in self.views.items()
            if view.scan.records  # (a file without one is not a log, which the view says)
            for runs in [self._followed_runs(path, view)]
        ]
        return [f"{path}: bad_lines={lines.total} ({lines.describe()})" for path, lines in judged if lines.fail]

    def _followed_runs(self, path: Path, view: LogView) -> list[str]:
        return [run for run in view.scan.engines if self._followed(path, run)]

    def _bad_lines_allowed(self, runs: list[str]) -> int:
        """``--max-bad-lines`` for a log of which ``runs`` are followed; under ``--run``, a log that does not hold
        that run is not judged, its bad lines neither."""
        return self.options.max_bad_lines if runs or self.options.run is None else sys.maxsize

    def summary(self) -> dict[str, Any]:
        return {"event": "summary", "logs": [view.scan.report() for view in self.views.values()]}

    def run(self) -> int:
        """Follow until Ctrl-C or SIGTERM, or the run ends with ``--exit-on-end``, or once with ``--once``.
        Stopped, it exits 0; with ``--exit-on-end`` (a verdict is what its exit code is for) 1 if what it saw
        already fails ``--fail-on``: a CI job stopped by its timeout must not pass a run whose gradients were
        already non-finite."""
        try:
            return self._run()
        except KeyboardInterrupt:
            if not self.options.exit_on_end:
                return EXIT_OK
            failing = any(
                view.scan.fails(self.options.fail_on, runs) or bad_lines(view.scan, self._bad_lines_allowed(runs)).fail
                for path, view in self.views.items()
                for runs in [self._followed_runs(path, view)]
            )
            return EXIT_ALERT if failing else EXIT_OK
        finally:
            self.waker.stop()
            if self.notifier is not None:
                self._notify_notices(self.notifier.close())
            for message in self._held_notices:
                print(f"moola-watch: {inert(message, limit=2000)}", file=sys.stderr, flush=True)
            if self.options.json:
                self._write_json(self.summary())

    def _run(self) -> int:
        while self.pump() or self.behind:  # history first, at full speed (a long line may fill a whole read)
            pass
        self._started = True
        self.tick(time.time())
        if self.options.once and not any(view.scan.records for view in self.views.values()):
            return self._nothing_to_judge()
        if self.options.once and self.options.run is not None and self._focus() is None:
            print(f"moola-watch: error: {inert(self._missing_run())}", file=sys.stderr, flush=True)
            return EXIT_USAGE
        if self.options.once or (self.options.exit_on_end and self.ended()):
            if not self.options.json:
                self._print_view()
            return self.exit_code()
        if not self.live_mode:
            code = self._loop(None)
            if not self.options.json:
                self._print_run_verdicts()
            return code
        try:
            with Live(
                self.render(time.time(), fit=True),
                console=self.console,
                auto_refresh=False,
                screen=True,
                redirect_stderr=False,
            ) as live:
                code = self._loop(live)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the screen is gone, what it showed stays printed
            self._print_view()
            raise
        self._print_view()
        return code

    def _print_view(self) -> None:
        """The whole view, and which runs fail, printed where the live screen was (as ``--once`` prints it)."""
        self.console.print(self.render(time.time()))
        self._print_run_verdicts()

    def _print_run_verdicts(self) -> None:
        for line in self.run_verdicts() + self.bad_line_verdicts():  # literally: run ids are untrusted text
            self.console.print(inert(line, limit=4000), markup=False, highlight=False, soft_wrap=True)

    def _nothing_to_judge(self) -> int:
        """``--once`` on an empty or foreign file (or a folder of them): an error, as ``check`` says, never a
        pass."""
        scans = [view.scan for view in self.views.values()]
        target = str(self.target)
        if self.options.from_end and not any(scan.bad_lines for scan in scans):
            errors = [f"{target} holds no record after what it held when followed (--from-end skips that)"]
        elif self.directory is not None and scans:  # each of its files, as check DIR names them
            errors = [unjudged(scan) for scan in scans]
        elif scans and scans[0].bad_lines:
            errors = [not_a_log(target, scans)]
        else:
            errors = [f"{target} holds no record yet"]
        for error in errors:
            print(f"moola-watch: error: {inert(error, limit=4000)}", file=sys.stderr, flush=True)
        return EXIT_USAGE

    def _loop(self, live: Live | None) -> int:
        last_draw = 0.0
        dirty = False
        while True:
            timeout = None
            if dirty:
                timeout = max(0.0, 1.0 / MAX_FPS - (time.monotonic() - last_draw))
            if not self.behind:
                self.waker.wait(timeout)
            changed = self.pump()
            now = time.time()
            self.tick(now)
            dirty |= changed
            moment = time.monotonic()
            due = moment - last_draw >= (1.0 / MAX_FPS if dirty else AGE_REFRESH_S)
            if live is not None and due:
                live.update(self.render(now, fit=True), refresh=True)
                last_draw, dirty = moment, False
            elif live is None:
                dirty = False
            if self.options.exit_on_end and self.ended():
                return self.exit_code()
