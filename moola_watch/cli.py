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
import math
import re
import signal
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from moola_watch import analyze, export, junit, loader, sources
from moola_watch.exit_codes import (
    EXIT_ALERT,
    EXIT_NO_MEASUREMENTS,
    EXIT_OK,
    EXIT_USAGE,
    bad_lines,
    exit_code,
    worst,
)
from moola_watch.render import stdout_gone
from moola_watch.rules import RULES, Thresholds, position, verdict_severity
from moola_watch.textsafe import inert, json_line

PROGRESS_MIN_BYTES = 8 << 20  # show a reading progress bar for logs at least this big, on a terminal
SEVERITY_CHOICES = ("warning", "error", "critical")


class UsageError(Exception):
    """A bad flag, config or file: printed as one line, exit 2."""


#: Each threshold in words, for ``--help``: (metavar, what it means). Defaults come from ``Thresholds``.
THRESHOLD_HELP: dict[str, tuple[str, str]] = {
    "vanishing": ("NORM", "a layer whose gradient norm falls below this is vanishing"),
    "exploding": ("NORM", "a layer whose gradient norm rises above this is exploding"),
    "balance_low": ("RATIO", "lower end of the healthy pointer/type gradient ratio"),
    "balance_high": ("RATIO", "upper end of the healthy ratio; outside the band is an imbalance warning"),
    "significant": ("RATIO", "a ratio beyond this (or below its inverse) is a significant imbalance, not a minor one"),
    "collapse_high": ("RATIO", "collapse when the window's mean ratio is above this: the pointer task dominates"),
    "collapse_low": ("RATIO", "collapse when the window's mean ratio is below this: the type task dominates"),
    "window": ("N", "task-balance samples the collapse rule averages over"),
    "norm_low": ("NORM", "mean layer norm below this: gradients too small overall (raise the learning rate)"),
    "norm_large": ("NORM", "mean layer norm above this: large (check gradient clipping)"),
    "norm_exploding": ("NORM", "mean layer norm above this: exploding overall (lower the learning rate)"),
    "healthy_norm_low": ("NORM", "lower end of the healthy mean layer norm, shown beside the trend"),
    "healthy_norm_high": ("NORM", "upper end of the healthy mean layer norm, shown beside the trend"),
    "stale_seconds": ("SECONDS", "a run with no new record for this long and no run_end is stale"),
    "confirm": (
        "N",
        "consecutive samples a confirmed rule's condition must hold before its alert fires (those "
        "the rules list calls confirmed: vanishing, exploding, norm level, imbalance, AMP overflow)",
    ),
    "starve_share": (
        "FRACTION",
        "a dominated task is starving (collapse is an error) only below this share of the update",
    ),
    "starve_drop": (
        "FRACTION",
        "... and only if its own training loss fell by less than this fraction over the window",
    ),
    "starve_rate": (
        "FRACTION",
        "... and only while that loss is above this fraction of its start (below it, the task has learned)",
    ),
    "final_share": (
        "FRACTION",
        "a completed run ended with a task starved (collapse, an error) if over the last window it got less than "
        "this fraction of an equal share of the update (1/tasks) ...",
    ),
    "final_run_share": ("FRACTION", "... and over the whole run less than this fraction of an equal share ..."),
    "final_rate": ("FRACTION", "... while its training loss is still above this fraction of its first"),
}
CONFIG_TABLES = ("thresholds", "notify")
#: Settings of the config's top level (before any table), in flag spelling: ``max-bad-lines = 10``.
CONFIG_KEYS = ("max-bad-lines",)


def _count(text: str) -> int:
    """A threshold that counts samples: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def _at_least_0(text: str) -> int:
    """A whole number, at least 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text}")
    return value


def _level(text: str) -> float:
    """A threshold that is a norm, ratio or duration: a finite number, at least 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value


def flag_name(field_name: str) -> str:
    """A threshold's flag spelling, which config files accept too: ``collapse_high`` -> ``collapse-high``."""
    return field_name.replace("_", "-")


def add_threshold_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per threshold (``--collapse-high``, ``--window``, ...), named after the field."""
    group = parser.add_argument_group(
        "thresholds", "Defaults from the spec. Norms are L2 norms of gradients; ratios are pointer/type."
    )
    for item in fields(Thresholds):
        metavar, words = THRESHOLD_HELP.get(item.name, ("VALUE", item.name.replace("_", " ")))
        counts = item.type in (int, "int")
        group.add_argument(
            "--" + flag_name(item.name),
            dest=f"th_{item.name}",
            type=_count if counts else _level,
            default=None,
            metavar=metavar,
            help=f"{words} (default: {item.default:g})",
        )
    group.add_argument(
        "--config", type=Path, default=None, metavar="TOML", help="a file with a [thresholds] table of the above"
    )


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--config`` file (empty without one). Unknown tables or top-level keys are errors listing the valid
    ones."""
    if args.config is None:
        return {}
    path = args.config
    try:
        config = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config {path} is not valid TOML: {exc}") from None
    keys = {*CONFIG_KEYS, *(key.replace("-", "_") for key in CONFIG_KEYS)}
    unknown = sorted(set(config) - set(CONFIG_TABLES) - keys)
    if unknown:
        valid = ", ".join(f"[{table}]" for table in CONFIG_TABLES)
        raise UsageError(
            f"config {path}: unknown key(s) {', '.join(unknown)}; the valid tables are {valid}, and the valid "
            f"top-level keys {', '.join(CONFIG_KEYS)}"
        )
    return config


def config_table(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The ``[name]`` table of ``--config`` (empty without a config or without that table)."""
    path = args.config
    table = _config(args).get(name, {})
    if not isinstance(table, dict):
        raise UsageError(f"config {path}: [{name}] must be a table")
    return table


def config_thresholds(args: argparse.Namespace) -> dict[str, Any]:
    """The config's [thresholds], keys in field spelling (the flags' spelling is accepted); unknown keys are
    errors listing the valid ones."""
    table = config_table(args, "thresholds")
    valid = [item.name for item in fields(Thresholds)]
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in values:
            raise UsageError(f"config {args.config}: [thresholds] sets {name} twice (as {name} and {flag_name(name)})")
        values[name] = value
    unknown = sorted(key for key in table if key.replace("-", "_") not in valid)
    if unknown:
        top = " (max-bad-lines goes at the top of the file, before any table)" if "max_bad_lines" in values else ""
        raise UsageError(
            f"config {args.config}: unknown threshold(s): {', '.join(unknown)}{top}; valid keys of [thresholds]: "
            + ", ".join(map(flag_name, valid))
        )
    return values


def max_bad_lines_from(args: argparse.Namespace) -> int:
    """``--max-bad-lines``, else the config's top-level ``max-bad-lines`` (or ``max_bad_lines``), else 0."""
    if args.max_bad_lines is not None:
        return args.max_bad_lines
    config = _config(args)
    given = [config[key] for key in ("max-bad-lines", "max_bad_lines") if key in config]
    if not given:
        return 0
    if len(given) > 1:
        raise UsageError(f"config {args.config}: max-bad-lines is set twice (as max-bad-lines and max_bad_lines)")
    value = given[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"config {args.config}: max-bad-lines must be a whole number of at least 0, got {value!r}")
    return value


def add_max_bad_lines_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-bad-lines",
        type=_at_least_0,
        default=None,
        metavar="N",
        help="a log with more than N lines that are not valid records (cut-off and repeated lines aside) fails, "
        "exit 1; also the config's top-level max-bad-lines; 0 if neither sets it",
    )


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    """Defaults, then ``--config``'s [thresholds], then flags."""
    try:
        return Thresholds.from_mapping(_threshold_values(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def overridden_from(args: argparse.Namespace) -> frozenset[str]:
    """The threshold names a flag or ``--config`` sets: these beat the ones a run recorded."""
    return frozenset(_threshold_values(args))


def _threshold_values(args: argparse.Namespace) -> dict[str, Any]:
    values = config_thresholds(args)
    values.update({k[3:]: v for k, v in vars(args).items() if k.startswith("th_") and v is not None})
    return values


def rules_help() -> str:
    """The rules as declared, one line each: name, worst severity, when it fires, what it judges."""
    lines = ["rules (worst severity; confirmed: waits --confirm samples):"]
    for rule in RULES:
        fires = "confirmed" if rule.confirmed else "at once"
        lines.append(f"  {rule.name:<16} {rule.severity:<8} {fires:<9} {rule.describe}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moola-watch",
        description="Follow, judge and summarise moola's JSONL gradient logs.",
        epilog="Exit codes: 0 nothing at or above --fail-on fired, 1 something did (or a log held more than "
        "--max-bad-lines bad lines), 2 usage, unreadable file or not a log, 3 (check) a run with no measurement; "
        "with several logs 2 beats 1 beats 3 beats 0. Runs are judged by the thresholds their run_start recorded, "
        "except those a flag or --config sets. LOG may be - (stdin), gzip, bzip2 or xz compressed, or a folder: its "
        "*.jsonl logs, each with its rotated parts (run.jsonl.2.gz, run.jsonl.1, run.jsonl) read oldest first.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    follow_cmd = commands.add_parser(
        "follow",
        help="live dashboard of a log, or of every *.jsonl in a directory (the default command)",
        description="Follow a growing log like tail -F. On a terminal: a live dashboard. Piped: one line per "
        "alert transition or run status change. Ctrl-C exits 0.",
    )
    follow_cmd.add_argument("target", type=Path, metavar="LOG|DIR")
    follow_cmd.add_argument("--from-end", action="store_true", help="skip the history already in the file")
    follow_cmd.add_argument("--poll", action="store_true", help="poll only, no inotify (network filesystems)")
    follow_cmd.add_argument(
        "--interval", type=float, default=0.25, metavar="SECONDS", help="seconds between stat checks (default: 0.25)"
    )
    follow_cmd.add_argument("--json", action="store_true", help="one JSON object per event, a summary at exit")
    follow_cmd.add_argument("--once", action="store_true", help="show the current state and exit")
    follow_cmd.add_argument(
        "--exit-on-end", action="store_true", help="exit when every run has ended, with check's exit codes"
    )
    follow_cmd.add_argument(
        "--fail-on", choices=SEVERITY_CHOICES, default="error", help="lowest severity that exits 1 (default: error)"
    )
    follow_cmd.add_argument("--run", metavar="ID", help="focus one run (its id, or its log's file name stem)")
    add_max_bad_lines_flag(follow_cmd)
    follow_cmd.add_argument(
        "--top", type=int, default=4, metavar="N", help="layers shown at each end of the ranking (default: 4)"
    )
    follow_cmd.add_argument("--layers", metavar="REGEX", help="only layers whose name matches")
    notify = follow_cmd.add_argument_group(
        "notifications (also from --config's [notify] table: on_alert, webhook, notify_on, timeout, retries, "
        "resolve_after)"
    )
    notify.add_argument(
        "--on-alert", action="append", default=[], metavar="CMD",
        help="run CMD (split like a shell would, never run by one) for each alert firing or resolved; the alert "
        "is JSON on its stdin and in MOOLA_* environment variables; repeatable",
    )  # fmt: skip
    notify.add_argument(
        "--webhook", action="append", default=[], metavar="URL",
        help="POST each alert as JSON (Slack/Discord 'text'/'content' plus the alert), in the background; "
        "repeatable",
    )  # fmt: skip
    notify.add_argument("--notify-on", choices=SEVERITY_CHOICES, default=None, help="lowest severity sent (error)")
    notify.add_argument(
        "--notify-timeout", type=float, default=None, metavar="SECONDS", help="per request or command run (10)"
    )
    add_threshold_flags(follow_cmd)
    analyze_cmd = commands.add_parser("analyze", help="report on saved logs: trends, worst layers, balance, alerts")
    analyze_cmd.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    analyze_cmd.add_argument("--json", action="store_true", help="one JSON object per log instead of tables")
    analyze_cmd.add_argument(
        "--csv",
        type=Path,
        metavar="DIR",
        help="also write the DataFrames as CSV files here: LOG.grad.csv, .layers, .balance, .epochs, .alerts, .runs "
        "(in .balance, .epochs and .alerts a value recorded as NaN is nan, one not recorded an empty cell)",
    )
    add_threshold_flags(analyze_cmd)
    check_cmd = commands.add_parser(
        "check",
        help="verdict and exit code for CI",
        description="Judge saved logs run by run; exit 0 ok, 1 something at or above --fail-on fired or a log held "
        "more than --max-bad-lines lines that are not valid records (cut-off and repeated lines aside), 2 usage, "
        "unreadable or not a log, 3 a run that measured nothing; with several logs 2 beats 1 beats 3 beats 0. "
        "LOG may be - (stdin) or gzip/bzip2/xz compressed; a folder stands for its *.jsonl logs, each read with "
        "its rotated parts (run.jsonl.1, run.jsonl.2.gz, ...) oldest first as one log.",
        epilog=rules_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check_cmd.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    check_cmd.add_argument(
        "--fail-on", choices=SEVERITY_CHOICES, default="error", help="lowest severity that fails (default: error)"
    )
    check_cmd.add_argument("--json", action="store_true", help="one JSON object per log on stdout")
    which = check_cmd.add_mutually_exclusive_group()
    which.add_argument(
        "--run", metavar="ID", help="judge only this run (a log may hold several; of several logs, those holding it)"
    )
    which.add_argument("--latest", action="store_true", help="judge only the run that wrote last in each log")
    check_cmd.add_argument(
        "--junit",
        type=Path,
        metavar="FILE",
        help="also write a JUnit XML report: one testcase per run, failing with its alerts at or above --fail-on",
    )
    add_max_bad_lines_flag(check_cmd)
    add_threshold_flags(check_cmd)
    report_cmd = commands.add_parser(
        "report",
        help="one self-contained HTML file of plots (and PNGs) from one or more logs",
        description="Plots of gradient norms, per-layer norms, task balance, losses and alerts; several logs are "
        "overlaid and compared in a table. The HTML works offline (plotly.js is inside).",
    )
    report_cmd.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    report_cmd.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="(report.html)")
    report_cmd.add_argument("--png", type=Path, metavar="DIR", help="also write each figure as a PNG here")
    add_threshold_flags(report_cmd)
    export_cmd = commands.add_parser(
        "export",
        help="write logs as TensorBoard event files",
        description="Write each run of each log as a TensorBoard run: a sub-directory of DIR named after the run, "
        "holding gradient norms, task balance, losses, metrics and the alerts (as text). Exporting again "
        "replaces the files. View with: tensorboard --logdir DIR",
    )
    export_cmd.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    export_cmd.add_argument("--tensorboard", type=Path, metavar="DIR", required=True, help="directory to write to")
    add_threshold_flags(export_cmd)
    return parser


def _scan(
    path: Path,
    parts: list[Path] | None,
    thresholds: Thresholds,
    overridden: frozenset[str],
    console: Console,
    *,
    frames: bool,
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

                scan = analyze.scan_log(path, thresholds, overridden=overridden, frames=frames, on_progress=advance)
                return scan
        return analyze.scan_log(path, thresholds, parts=parts, overridden=overridden, frames=frames)
    except sources.UnreadableLog as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename or path}: {exc.strerror or exc}") from None


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
    thresholds, overridden = thresholds_from(args), overridden_from(args)
    parts_of: dict[Path, list[Path]] = getattr(args, "parts", {})
    for path in args.logs:
        try:
            scan = _scan(path, parts_of.get(path), thresholds, overridden, console, frames=frames)
        except UsageError as exc:
            _error(str(exc))
            yield path, None, str(exc)
            continue
        error = None
        if not scan.records:
            error = f"{path} is not a moola log: no valid record ({scan.bad_lines} bad lines)"
            _error(error)
        yield path, scan, error


def _analyze(args: argparse.Namespace, console: Console) -> int:
    from moola_watch.report import analyze_report

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
                loader.write_csv(args.csv, labels[path], {**frames, **analyze.as_recorded(scan)})
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
        logs = " ".join(str(path) for path in analyzed)
        console.print(inert(f"Plots: moola-watch report {logs} -o report.html"), style="dim", markup=False)
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
    shown = f"{len(runs)} of {len(scan.engines)} runs" if len(runs) < len(scan.engines) else f"{len(runs)} run(s)"
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
            line(f"    last epoch's metrics: {metrics}")
        for _run, alert in scan.alerts([run]):
            since = position(alert.first_epoch, alert.first_step)
            counts = verdict_severity(alert)
            recovered = f" (recovered: counts as a {counts})" if counts != alert.severity else ""
            line(f"    {alert.severity:<8} {alert.state:<8} {alert.rule} ({alert.subject}) since {since}{recovered}: "
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
        inert(f"wrote {written.html} ({written.size / 1e6:.1f} MB, {written.runs} runs)"
              + (f" and {len(written.pngs)} PNGs in {args.png}" if args.png else ""), limit=4000),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    if len(readable) < len(scans):
        return EXIT_USAGE
    return EXIT_ALERT if any(scan.fails("error") for scan in readable) else EXIT_OK


def _write_junit(path: Path, results: list[junit.LogResult], fail_on: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(junit.junit_xml(results, fail_on))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _export(args: argparse.Namespace, console: Console) -> int:
    """Every run of every log as a TensorBoard run under ``--tensorboard``."""
    worst = EXIT_OK
    frames_of: dict[tuple[str, str], dict[str, Any]] = {}
    for path, scan, _error_text in _scans(args, console, frames=True):
        if scan is None or not scan.records:
            worst = EXIT_USAGE
            continue
        frames = analyze.to_frames(scan)
        frames_of.update({(str(path), run): frames for run in scan.engines})
    names = export.directory_names(list(frames_of))
    for (log, run), frames in frames_of.items():
        events = export.run_events(names[(log, run)], run, frames)
        try:
            written = export.write_run(args.tensorboard, events, log)
        except OSError as exc:
            raise UsageError(f"cannot write to {args.tensorboard}: {exc.strerror or exc}") from None
        console.print(
            inert(f"{written}  {events.scalars} scalars, {events.alerts} alerts  [{Path(log).name}]", limit=4000),
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    return worst


def _error(message: str) -> None:
    print(f"moola-watch: error: {inert(message, limit=1000)}", file=sys.stderr)


def _follow(args: argparse.Namespace, console: Console) -> int:
    from moola_watch.follow import Follower, FollowOptions
    from moola_watch.notify import Notifier, settings_from

    thresholds = thresholds_from(args)
    try:
        notify = settings_from(
            config_table(args, "notify"), args.on_alert, args.webhook, args.notify_on, args.notify_timeout
        )
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
        raise UsageError(f"{args.target} does not exist (without --once, follow waits for it to appear)")
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
    )
    notifier = Notifier.from_settings(notify) if notify.enabled else None
    with stops_as_interrupt():
        return Follower(args.target, thresholds, options, console, notifier=notifier).run()


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


COMMANDS = {"follow": _follow, "analyze": _analyze, "check": _check, "report": _report, "export": _export}
HELP_FLAGS = ("-h", "--help")


def with_default_command(argv: list[str]) -> list[str]:
    """``moola-watch LOG`` and ``moola-watch --once LOG`` are ``moola-watch follow ...``."""
    if argv and argv[0] not in COMMANDS and argv[0] not in HELP_FLAGS:
        return ["follow", *argv]
    return argv


def log_files(paths: Sequence[Path]) -> tuple[list[Path], dict[Path, list[Path]]]:
    """The logs named on the command line, each directory among them as its logs in name order: its ``*.jsonl``
    files, each with the rotated parts of it there (``run.jsonl.1``, ``run.jsonl.2.gz``), which are read oldest
    first as one log, less any part that is a copy of the next (:func:`moola_watch.sources.saved_logs`). Returns the
    logs, and the parts of those made of several. A directory without any log is a usage error; a file given that is one part of a rotated log is
    read alone, and a note says so, as it says when a log's numbered and dated parts are read by time."""
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
