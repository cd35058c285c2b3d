"""``moola-watch``'s command line: its flags, and the ``--config`` TOML beside them (thresholds, the notify table,
``max-bad-lines``), read into the values the commands use; a bad flag or config is a :class:`UsageError`."""

from __future__ import annotations

import argparse
import math
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from moola_watch import __version__
from moola_watch.config_keys import field_spelled
from moola_watch.floors import checked_floors
from moola_watch.rules import RULES, Thresholds

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
    "starve_persistence": (
        "COSINE",
        "... unless it is at its floor: its gradient's mean cosine between consecutive samples below this over the "
        "window (mini-batch noise around a minimum; also at the end) ...",
    ),
    "floor_rate": ("FRACTION", "... and its loss at or below this fraction of its first (it learned)"),
    "noise_persistence": (
        "COSINE",
        "... or at a floor its loss cannot fall far below: its gradient's mean cosine below this (pure noise) ...",
    ),
    "noise_rate": ("FRACTION", "... and its loss at or below this fraction of its first (it fell; 0 turns this off)"),
    "floor_progress": (
        "FRACTION",
        "where a task's training floor is known (--task-floor, or recorded by GradientMonitor's task_floors), the "
        "floor decides instead: the task is at it once its loss came this fraction of the way to the floor from its "
        "first epoch's loss (its first loss where no epoch was recorded)",
    ),
    "final_share": (
        "FRACTION",
        "a completed run ended with a task starved (collapse, an error) if over the last window it got less than "
        "this fraction of an equal share of the update (1/tasks) ...",
    ),
    "final_run_share": ("FRACTION", "... and over the whole run less than this fraction of an equal share ..."),
    "final_rate": ("FRACTION", "... while its training loss is still above this fraction of its first"),
}
CONFIG_TABLES = ("thresholds", "notify", "task_floors")
#: Settings of the config's top level (before any table), in flag spelling: ``max-bad-lines = 10``.
CONFIG_KEYS = ("max-bad-lines",)


def _whole_at_least(least: int) -> Callable[[str], int]:
    """A flag's type: a whole number, at least ``least`` (a threshold that counts samples: 1)."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {least}, got {text}")
        return value

    return whole


_count, _at_least_0 = _whole_at_least(1), _whole_at_least(0)


def _level(text: str) -> float:
    """A threshold that is a norm, ratio or duration: a finite number, at least 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value


def _task_floor(text: str) -> tuple[str, float]:
    """``--task-floor``'s TASK=LOSS."""
    task, equals, loss = text.rpartition("=")
    try:
        value = float(loss)
    except ValueError:
        value = None
    if not equals or not task or value is None:
        raise argparse.ArgumentTypeError(f"must be TASK=LOSS, got {text}")
    try:
        return task, checked_floors({task: value})[task]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def floors_from(args: argparse.Namespace) -> dict[str, float]:
    """The training floors the command line gives: the config's [task_floors], then ``--task-floor`` flags."""
    try:
        floors = checked_floors(config_table(args, "task_floors"))
    except ValueError as exc:
        raise UsageError(f"config {args.config}: [task_floors] {exc}") from None
    return floors | dict(args.task_floor or [])


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
        "--task-floor",
        type=_task_floor,
        action="append",
        metavar="TASK=LOSS",
        help="a task's training loss at the end of a run on it alone: a stalled task that came --floor-progress of "
        "the way to it from its first epoch's loss is at its floor, not starving (repeat per task; beats a floor "
        "the run recorded; also the config's [task_floors] table)",
    )
    group.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="TOML",
        help="a file with a [thresholds] table of the above and a [task_floors] one (task = loss)",
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
    misplaced = any(key.replace("-", "_") == "max_bad_lines" for key in table)
    top = " (max-bad-lines goes at the top of the file, before any table)" if misplaced else ""
    try:
        return field_spelled(table, [item.name for item in fields(Thresholds)], "thresholds", kind="threshold(s)",
                             hint=top, as_flags=True)  # fmt: skip
    except ValueError as exc:
        raise UsageError(f"config {args.config}: {exc}") from None


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
    """Defaults, then ``--config``'s [thresholds], then flags; an error in the config's own values names the file."""
    config = config_thresholds(args)  # (the file read once)
    try:
        Thresholds.from_mapping(config)
    except ValueError as exc:
        raise UsageError(f"config {args.config}: [thresholds] {exc}") from None
    try:
        return Thresholds.from_mapping({**config, **_flag_thresholds(args)})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def overridden_from(args: argparse.Namespace) -> frozenset[str]:
    """The threshold names a flag or ``--config`` sets: these beat the ones a run recorded."""
    return frozenset({**config_thresholds(args), **_flag_thresholds(args)})


def _flag_thresholds(args: argparse.Namespace) -> dict[str, Any]:
    """The thresholds the command line's flags set."""
    return {k[3:]: v for k, v in vars(args).items() if k.startswith("th_") and v is not None}


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
    parser.add_argument("--version", action="version", version=f"moola-watch {__version__}")
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
        "resolve_after, sent_log)"
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
    notify.add_argument(
        "--sent-log", default=None, metavar="FILE",
        help="where the alerts each destination got are kept, so that a restarted watcher does not send them again "
        "(default: $XDG_STATE_HOME/moola-watch/sent-alerts, else ~/.local/state/...); '' for none: send the logs' "
        "whole history",
    )  # fmt: skip
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
    floors_cmd = commands.add_parser(
        "floors",
        help="each task's training floor, read off runs that trained it alone, as --task-floor flags",
        description="For each run of each LOG that trained one task alone (the one task with a loss whose weight "
        "is not 0), that task's training floor: the mean of its last 3 epochs' training loss (the epoch records' "
        "task_losses). The last line gives them as --task-floor flags (a task's last one winning), for moola train "
        "or any moola-watch command that judges a log. A run of several tasks together is skipped.",
    )
    floors_cmd.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    return parser
