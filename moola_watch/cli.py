"""``moola-watch``: ``follow`` a live log (``moola-watch LOG`` for short); ``analyze``, ``check`` and ``export``
saved ones.

Exit codes: 0 nothing at or above ``--fail-on`` fired; 1 something did, or (``check``, ``follow``) a log held more
than ``--max-bad-lines`` lines it could not judge; 2 usage error, unreadable file or a file that is not a log (no
valid record); 3 (``check``) a run that recorded no measurement, nothing having fired. Several logs: 2 beats 1
beats 3 beats 0.
Each run is judged by the thresholds its ``run_start`` recorded, except those a flag or ``--config`` sets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from moola_watch import analyze, floors, junit, sources
from moola_watch.counts import counted
from moola_watch.exit_codes import (
    EXIT_ALERT,
    EXIT_NO_MEASUREMENTS,
    EXIT_OK,
    EXIT_USAGE,
    bad_lines,
    exit_code,
    worst,
)
from moola_watch.options import (
    UsageError,
    build_parser,
    config_table,
    floors_from,
    max_bad_lines_from,
    overridden_from,
    thresholds_from,
)
from moola_watch.render import stdout_gone
from moola_watch.repeats import fold_resolved_repeats
from moola_watch.rules import Thresholds, position, verdict_severity
from moola_watch.tail import RecordItem
from moola_watch.textsafe import inert, json_line

PROGRESS_MIN_BYTES = 8 << 20  # show a reading progress bar for logs at least this big, on a terminal


def _scan(
    path: Path,
    parts: list[Path] | None,
    thresholds: Thresholds,
    overridden: frozenset[str],
    console: Console,
    *,
    frames: bool,
    floors: dict[str, float],
) -> analyze.LogScan:
    """One log read whole: ``path``, or its rotated ``parts`` one after another."""
    try:
        for source in parts or [path]:
            if not sources.readable_kind(source):
                raise UsageError(f"{source} is not a regular file")
        size = path.stat().st_size if parts is None and sources.plain_file(path) else 0
        if console.is_terminal and size >= PROGRESS_MIN_BYTES:
            with Progress(
                TextColumn("reading {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[records]} records"),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task(inert(path.name), total=size, records=0)
                scan: analyze.LogScan | None = None

                def advance(done: int) -> None:
                    progress.update(task, completed=done, records=scan.records if scan else 0)

                scan = analyze.scan_log(path, thresholds, overridden=overridden, floors=floors, frames=frames,
                                        on_progress=advance)  # fmt: skip
                return scan
        return analyze.scan_log(path, thresholds, parts=parts, overridden=overridden, floors=floors, frames=frames)
    except sources.UnreadableLog as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(cannot_read(path, exc)) from None


def cannot_read(path: Path, exc: OSError) -> str:
    """A log that could not be read, in one line: a missing one's per-rank logs named where they are."""
    missing = isinstance(exc, FileNotFoundError) and not sources.is_stdin(path)
    return (
        f"cannot read {exc.filename or path}: {exc.strerror or exc}{sources.missing_log_hint(path) if missing else ''}"
    )


class PipeSafeConsole(Console):
    """A console that, when its reader closes the pipe, stops printing instead of exiting (Rich's default raises
    ``SystemExit(1)``, whatever the verdict, and leaves the logs after it unjudged and ``--junit`` unwritten)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        stdout_gone()


def _print_json(obj: Any) -> None:
    try:
        sys.stdout.buffer.write(json_line(obj))
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()


def _scans(
    args: argparse.Namespace, console: Console, *, frames: bool
) -> Iterator[tuple[Path, analyze.LogScan | None, str | None]]:
    """Each log of the command line scanned, or None (after a one-line error, also given as the third item) if it
    cannot be read. A scan with no valid record (not a log) comes with a one-line error too."""
    thresholds, overridden, floors = thresholds_from(args), overridden_from(args), floors_from(args)
    parts_of: dict[Path, list[Path]] = getattr(args, "parts", {})
    for path in args.logs:
        try:
            scan = _scan(path, parts_of.get(path), thresholds, overridden, console, frames=frames, floors=floors)
        except UsageError as exc:
            _error(str(exc))
            yield path, None, str(exc)
            continue
        error = None
        if not scan.records:
            error = analyze.not_a_log(path, [scan])
            _error(error)
        yield path, scan, error


def _analyze(args: argparse.Namespace, console: Console) -> int:
    from moola_watch import loader  # pandas: half a second that check and follow, run far more often, never need
    from moola_watch.report import analyze_report

    if args.csv is not None and sources.is_stdin(args.csv):
        raise UsageError("--csv takes a directory to write one CSV file per table in, not - (stdout)")
    worst = EXIT_OK
    labels = loader.log_labels(args.logs)
    analyzed: list[Path] = []
    for path, scan, _error_text in _scans(args, console, frames=True):
        if scan is None or not scan.records:
            worst = EXIT_USAGE
            continue
        analyzed.append(path)
        frames = analyze.to_frames(scan)
        if args.csv:
            try:
                loader.write_csv(args.csv, labels[path], {**frames, **analyze.as_recorded(scan, frames)})
            except OSError as exc:
                raise UsageError(f"cannot write CSV to {args.csv}: {exc.strerror or exc}") from None
        if args.json:
            report = scan.report()
            largest, smallest = analyze.worst_layers(frames["layers"], thresholds=thresholds_from(args))
            report["worst_layers"] = {
                "largest": largest.to_dict(orient="records"),
                "smallest": smallest.to_dict(orient="records"),
            }
            _print_json(report)
        else:
            console.print(analyze_report(scan, frames))
        if worst == EXIT_OK and scan.fails("error"):
            worst = EXIT_ALERT
    if analyzed and not args.json:  # (a hint naming a file that failed would fail too)
        # one argument each (a space), and none taken for an option (a name that starts with -)
        logs = " ".join(shlex.quote(f"./{path}" if str(path).startswith("-") and str(path) != "-" else str(path))
                        for path in analyzed)  # fmt: skip
        hint = f"Plots: moola-watch report {logs} -o report.html"  # a command to copy: never cut, never broken
        console.print(inert(hint, limit=len(hint)), style="dim", markup=False, highlight=False, soft_wrap=True)
    return worst


def _check(args: argparse.Namespace, console: Console) -> int:
    codes = {EXIT_OK}
    results: list[junit.LogResult] = []
    max_bad_lines = max_bad_lines_from(args)
    parts_of: dict[Path, list[Path]] = getattr(args, "parts", {})
    lacking: list[dict[str, Any]] = []  # logs without --run's run: an error only if no log holds it
    held = False
    for path, scan, error in _scans(args, console, frames=False):
        if scan is None or not scan.records:
            report = scan.report() if scan else {"log": str(path), "verdict": "unreadable"}
            report["error"] = error
            results.append(junit.LogResult(str(path), report))
            if args.json:
                _print_json(report)
            codes.add(EXIT_USAGE)
            continue
        try:
            runs = scan.select(args.run, latest=args.latest)
        except KeyError as exc:
            lacking.append(
                {"log": str(path), "verdict": "no_such_run", "run": args.run, "runs": [],
                 "runs_in_log": list(scan.engines), "error": exc.args[0]}
            )  # fmt: skip
            continue
        held = True
        report = _check_report(scan, runs, max_bad_lines, parts_of.get(path))
        codes.add(exit_code(scan, runs, args.fail_on, max_bad_lines))
        results.append(junit.LogResult(str(path), report))
        if args.json:
            _print_json(report)
        else:
            _print_check(console, path, scan, runs, args.fail_on, report)
    if lacking and not held:
        for report in lacking:  # no log holds the run (with a folder or several logs, those without it are skipped)
            _error(report["error"])
            results.append(junit.LogResult(report["log"], report))
            if args.json:
                _print_json(report)
        codes.add(EXIT_USAGE)
    if args.junit:
        _write_junit(args.junit, results, args.fail_on)
    return worst(codes)


def _check_report(
    scan: analyze.LogScan, runs: list[str], max_bad_lines: int, parts: list[Path] | None
) -> dict[str, Any]:
    """``check --json``'s object for ``runs`` of a log: the scan's report, how its bad lines are judged, and the
    rotated parts it was read from."""
    report = scan.report(runs)
    judged = bad_lines(scan, max_bad_lines)
    report.update(
        bad_lines_counted=judged.counted,
        max_bad_lines=max_bad_lines,
        bad_lines_fail=judged.fail,
        bad_lines_summary=judged.describe(),
    )
    if parts is not None:
        report["parts"] = [str(part) for part in parts]
    return report


def _print_check(
    console: Console, path: Path, scan: analyze.LogScan, runs: list[str], fail_on: str, report: dict[str, Any]
) -> None:
    """The log's line (its rotated parts, its bad lines and whether they fail it), then per run: its verdict, where
    its thresholds came from, and its alerts."""

    def line(text: str) -> None:
        console.print(inert(text, limit=4000), markup=False, highlight=False, soft_wrap=True)

    code = exit_code(scan, runs, fail_on, report["max_bad_lines"])
    status = {EXIT_OK: "ok", EXIT_ALERT: "FAIL", EXIT_NO_MEASUREMENTS: "EMPTY"}[code]
    shown = (
        f"{len(runs)} of {counted(len(scan.engines), 'run')}"
        if len(runs) < len(scan.engines)
        else counted(len(runs), "run")
    )
    parts = f"  parts={','.join(Path(part).name for part in report['parts'])}" if "parts" in report else ""
    bad = f" ({report['bad_lines_summary']})" if report["bad_lines_summary"] else ""
    line(f"{status}  {path}{parts}  verdict={scan.verdict(runs)}  {shown}  records={scan.records}  "
         f"bad_lines={scan.bad_lines}{bad}")  # fmt: skip
    for run in runs:
        about = scan.run_report(run)
        metrics = "  ".join(f"{name}={value:.4g}" for name, value in about["metrics"].items())
        line(f"  run {run}  verdict={about['verdict']}  status={about['status']}  "
             f"thresholds: {about['thresholds_from']}")  # fmt: skip
        if metrics:  # what the run's own held-out metrics say, next to the verdict
            line(f"    last epoch's metrics: {metrics}{_metrics_older_than_the_run(about)}")
        for told in fold_resolved_repeats([alert for _run, alert in scan.alerts([run])]):
            alert = told.alert
            since = position(alert.first_epoch, alert.first_step)
            counts = verdict_severity(alert)
            notes = [f"recovered: counts as a {counts}"] if counts != alert.severity else []
            if told.first is not None:  # a flapping rule: its earlier episodes, each resolved, in a few words
                first = position(told.first.first_epoch, told.first.first_step)
                notes.append(f"and {counted(told.before, 'time')} before, the first since {first}, each resolved")
            noted = f" ({'; '.join(notes)})" if notes else ""
            line(f"    {alert.severity:<8} {alert.state:<8} {alert.rule} ({alert.subject}) since {since}{noted}: "
                 f"{alert.message} -> {alert.recommendation}")  # fmt: skip


def _report(args: argparse.Namespace, console: Console) -> int:
    from moola_watch import html_report

    scans = [(path, scan) for path, scan, _error_text in _scans(args, console, frames=True)]
    readable = [scan for _path, scan in scans if scan is not None and scan.records]
    if not readable:
        return EXIT_USAGE
    try:
        written = html_report.write_report(readable, args.output, args.png)
    except html_report.ReportError as exc:
        raise UsageError(str(exc)) from None
    console.print(
        inert(f"wrote {written.html} ({written.size / 1e6:.1f} MB, {counted(written.runs, 'run')})"
              + (f" and {counted(len(written.pngs), 'PNG')} in {args.png}" if args.png else ""), limit=4000),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    if len(readable) < len(scans):
        return EXIT_USAGE
    return EXIT_ALERT if any(scan.fails("error") for scan in readable) else EXIT_OK


def _metrics_older_than_the_run(about: dict[str, Any]) -> str:
    """' (epoch 2; the run got to epoch 3)' when the last epoch record is older than the run's last epoch (a run
    that failed in an epoch's validation wrote no record for it), else ''."""
    measured, reached = about["metrics_epoch"], about["epoch"]
    if measured is None or reached is None or reached <= measured:
        return ""
    return f" (epoch {measured}; the run got to epoch {reached})"


def _write_junit(path: Path, results: list[junit.LogResult], fail_on: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(junit.junit_xml(results, fail_on))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _export(args: argparse.Namespace, console: Console) -> int:
    """Every run of every log as a TensorBoard run under ``--tensorboard``."""
    from moola_watch import export  # pandas: half a second that check and follow, run far more often, never need

    worst = EXIT_OK
    frames_of: dict[tuple[str, str], dict[str, Any]] = {}
    for path, scan, _error_text in _scans(args, console, frames=True):
        if scan is None or not scan.records:
            worst = EXIT_USAGE
            continue
        frames = analyze.to_frames(scan)
        # balance and epochs as recorded: a val_loss gone NaN is written NaN, one never logged is left out
        frames = {**frames, **analyze.as_recorded(scan)}
        frames_of.update({(str(path), run): frames for run in scan.engines})
    names = export.directory_names(list(frames_of))
    for (log, run), frames in frames_of.items():
        events = export.run_events(names[(log, run)], run, frames)
        try:
            written = export.write_run(args.tensorboard, events, log)
        except OSError as exc:
            raise UsageError(f"cannot write to {args.tensorboard}: {exc.strerror or exc}") from None
        console.print(
            inert(f"{written}  {counted(events.scalars, 'scalar')}, {counted(events.alerts, 'alert')}  "
                  f"[{Path(log).name}]", limit=4000),
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    return worst


def _error(message: str) -> None:
    print(f"moola-watch: error: {inert(message, limit=1000)}", file=sys.stderr)


def _follow(args: argparse.Namespace, console: Console) -> int:
    from moola_watch.follow import Follower, FollowOptions
    from moola_watch.notify import Notifier, settings_from

    thresholds = thresholds_from(args)
    table = notify_table_checked(args)
    try:
        notify = settings_from(table, args.on_alert, args.webhook, args.notify_on, args.notify_timeout, args.sent_log)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.interval <= 0 or args.top < 1:
        raise UsageError("--interval must be above 0 and --top at least 1")
    if args.layers:
        try:
            re.compile(args.layers)
        except re.error as exc:
            raise UsageError(f"--layers is not a valid regular expression: {exc}") from None
    if sources.is_stdin(args.target):
        raise UsageError("follow reads a file or a folder, not stdin (-): check, analyze, report and export read -")
    if args.target.exists() and not (args.target.is_file() or args.target.is_dir()):
        raise UsageError(f"{args.target} is neither a file nor a directory")
    if args.once and not args.target.exists():
        raise UsageError(f"{args.target} does not exist (without --once, follow waits for it to appear)"
                         f"{sources.missing_log_hint(args.target)}")  # fmt: skip
    kind = sources.file_compression(args.target)
    if kind is not None and not args.once:  # (a folder's compressed logs are read whole, as --once reads this one)
        raise UsageError(f"{args.target} is {kind}-compressed: a compressed log cannot grow, so there is nothing to "
                         "follow; read it with follow --once, check or analyze")  # fmt: skip
    options = FollowOptions(
        from_end=args.from_end,
        poll=args.poll,
        interval=args.interval,
        json=args.json,
        once=args.once,
        exit_on_end=args.exit_on_end,
        fail_on=args.fail_on,
        max_bad_lines=max_bad_lines_from(args),
        run=args.run,
        top=args.top,
        layers=args.layers,
        overridden=overridden_from(args),
        floors=floors_from(args),
    )
    notifier = Notifier.from_settings(notify) if notify.enabled else None
    with stops_as_interrupt():
        try:
            return Follower(args.target, thresholds, options, console, notifier=notifier).run()
        except sources.UnreadableLog as exc:  # a compressed log that is zstd, or damaged: its line says which
            raise UsageError(str(exc)) from None


#: Signals that end ``follow`` as Ctrl-C does: SIGTERM (systemd, Kubernetes, ``timeout``), SIGHUP (the terminal or
#: ssh session it ran in closed).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stops_as_interrupt() -> Iterator[None]:
    """``STOP_SIGNALS`` end ``follow`` the way Ctrl-C does: queued alerts get their grace, what could not go out
    is said, and ``--json`` writes its summary. Their default would kill us mid-way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {stop: signal.signal(stop, interrupt) for stop in STOP_SIGNALS}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _floors(args: argparse.Namespace, console: Console) -> int:
    """Each task's training floor from runs that trained it alone, then the ``--task-floor`` flags."""

    def say(line: str) -> None:
        console.print(inert(line, limit=4000), highlight=False, soft_wrap=True)

    found: list[floors.Floor] = []
    worst = EXIT_OK
    for path in args.logs:
        try:
            if not sources.readable_kind(path):
                raise UsageError(f"{path} is not a regular file")
            items = analyze.read_sources([path], str(path), None)
            runs = floors.solo_runs(item.record for item in items if isinstance(item, RecordItem))
        except (sources.UnreadableLog, UsageError) as exc:
            runs, error = [], str(exc)
        except OSError as exc:
            runs, error = [], cannot_read(path, exc)
        else:
            error = (f"{path}: no run trained one task alone and recorded its training loss: no floor to read" if runs
                     else f"{path} is not a moola log: not one valid record")  # fmt: skip
        got = []
        for result in map(floors.floor_of, runs):
            if isinstance(result, floors.Skipped):
                say(f"{path}  run {result.run}  skipped: {result.why}")
                continue
            ended = ""
            if result.status != "completed":
                ended = (
                    f"; the run did not complete ({result.status or 'no run_end'}): a floor is a finished run's loss"
                )
            say(f"{path}  run {result.run}  {result.task} {result.loss:.4g}  (the mean training loss of its last "
                f"{counted(result.epochs, 'epoch')}{floors.fall_words(result)}{ended})")  # fmt: skip
            got.append(result)
        if not got:
            _error(error)
            worst = EXIT_USAGE
        found += got
    twice = {task for task in (f.task for f in found) if sum(f.task == task for f in found) > 1}
    for task in sorted(twice):
        given = ", ".join(f"{f.loss:.4g}" for f in found if f.task == task)
        say(f"{task}: {given} from several runs; the flags give the last")
    if found:
        say(floors.flags(found))
    return worst


COMMANDS = {"follow": _follow, "analyze": _analyze, "check": _check, "report": _report, "export": _export,
            "floors": _floors}  # fmt: skip
HELP_FLAGS = ("-h", "--help", "--version")  # said by moola-watch itself, not by follow


def with_default_command(argv: list[str]) -> list[str]:
    """``moola-watch LOG`` and ``moola-watch --once LOG`` are ``moola-watch follow ...``."""
    if argv and argv[0] not in COMMANDS and argv[0] not in HELP_FLAGS:
        return ["follow", *argv]
    return argv


def log_files(paths: Sequence[Path]) -> tuple[list[Path], dict[Path, list[Path]]]:
    """The logs named on the command line, each directory among them as its logs in name order: its ``*.jsonl``
    files, each with the rotated parts of it there (``run.jsonl.1``, ``run.jsonl.2.gz``), which are read oldest
    first as one log, less any part that is a copy of the next (:func:`moola_watch.sources.saved_logs`). Returns
    the logs, and the parts of those made of several. A directory without any log is a usage error; a file given
    that is one part of a rotated log is read alone, and a note says so, as it says when a log's numbered and dated
    parts are read by time."""
    files: list[Path] = []
    parts: dict[Path, list[Path]] = {}
    for path in paths:
        if sources.is_stdin(path):
            if any(map(sources.is_stdin, files)):
                raise UsageError("- (stdin) is named twice: it can be read once")
            files.append(path)
        elif path.is_dir():
            try:
                logs = sources.saved_logs(path, note=_note)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            except OSError as exc:
                raise UsageError(f"cannot read the directory {path}: {exc.strerror or exc}") from None
            if not logs:
                raise UsageError(f"{path} is a directory with no *.jsonl log in it")
            for log, its_parts in logs:
                files.append(log)
                if its_parts != [log]:
                    parts[log] = its_parts
        else:
            files.append(path)
            _note_rotated_part(path)
    return files, parts


def notify_table_checked(args: argparse.Namespace) -> dict[str, Any]:
    """The config's ``[notify]`` table, judged as ``follow`` will judge it, by every command that reads the config
    (a ``check`` in CI must not pass a config on which ``follow`` fails at 2 a.m.); its error names the file."""
    from moola_watch.notify import settings_from

    table = config_table(args, "notify")
    try:
        settings_from(table)
    except ValueError as exc:
        raise UsageError(f"config {args.config}: {exc}") from None
    return table


#: The options that name a file a command writes (report's -o, check's --junit), by their dest and flag.
OUTPUT_FILES = {"output": "-o/--output", "junit": "--junit"}


def refuse_overwriting_logs(args: argparse.Namespace) -> None:
    """A usage error, before anything is read or written, when a file a command would write is one of the logs it
    reads: ``report run.jsonl -o run.jsonl`` (a tab-completion slip) replaced the training's only record with HTML."""
    parts_of: dict[Path, list[Path]] = getattr(args, "parts", {})
    read = [path for log in args.logs if not sources.is_stdin(log) for path in parts_of.get(log, [log])]
    for dest, flag in OUTPUT_FILES.items():
        target = getattr(args, dest, None)
        if target is None or not target.exists():
            continue
        for log in read:
            with contextlib.suppress(OSError):
                if target.samefile(log):
                    raise UsageError(f"{flag} {target} is the log {log}, which this command reads: writing there "
                                     "would overwrite it; give another file")  # fmt: skip
        if any(map(sources.is_stdin, args.logs)) and _is_stdin_file(target):
            raise UsageError(f"{flag} {target} is the file on stdin (-), which this command reads: writing there "
                             "would overwrite it; give another file")  # fmt: skip


def _is_stdin_file(path: Path) -> bool:
    """Whether stdin is redirected from the file at ``path`` (``check - --junit run.jsonl < run.jsonl``)."""
    try:
        there, here = path.stat(), os.fstat(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError):  # no stdin (closed, or replaced by an object without a file)
        return False
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _note(message: str) -> None:
    """One note on stderr (about how a log is read: it is still judged)."""
    print(f"moola-watch: note: {inert(message, limit=2000)}", file=sys.stderr)


def _note_rotated_part(path: Path) -> None:
    """Say so when ``path`` is one part of a rotated log: only it is read."""
    try:
        rotated = sources.log_parts(path)
    except (OSError, ValueError):
        return
    if rotated is not None:
        log, parts = rotated
        names = ", ".join(part.name for part in parts)
        print(
            f"moola-watch: note: {inert(str(path), limit=1000)} is one part of the rotated log {inert(str(log))} "
            f"(parts, oldest first: {inert(names, limit=1000)}); only this part is read. Give its folder "
            f"({inert(str(path.parent))}) to read them all as one log.",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_default_command(list(sys.argv[1:] if argv is None else argv)))
    # Judging saved logs (follow --once too) goes on to the end when stdout's reader leaves early; following stops.
    console = Console() if args.command == "follow" and not args.once else PipeSafeConsole()
    try:
        if "logs" in args:
            args.logs, args.parts = log_files(args.logs)
            refuse_overwriting_logs(args)
        if getattr(args, "config", None) is not None and args.command != "follow":
            notify_table_checked(args)
        return COMMANDS[args.command](args, console)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
