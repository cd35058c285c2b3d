"""The exit codes every ``moola-watch`` command shares (``check``'s, documented in the README), and which one a
log's runs give."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from moola_watch.analyze import VERDICT_NO_MEASUREMENTS, LogScan, run_verdict

EXIT_OK, EXIT_ALERT, EXIT_USAGE, EXIT_NO_MEASUREMENTS = 0, 1, 2, 3
#: Which exit code wins when several logs or runs disagree (most telling first).
EXIT_PRECEDENCE = (EXIT_USAGE, EXIT_ALERT, EXIT_NO_MEASUREMENTS, EXIT_OK)


def exit_code(scan: LogScan, runs: Sequence[str], fail_on: str) -> int:
    """``check``'s exit code for ``runs`` of one log: an alert at or above ``fail_on`` fails (1); else a run
    that measured nothing is no pass (3); else 0."""
    if scan.fails(fail_on, runs):
        return EXIT_ALERT
    if any(run_verdict(scan.engines[run]) == VERDICT_NO_MEASUREMENTS for run in runs):
        return EXIT_NO_MEASUREMENTS
    return EXIT_OK


def worst(codes: Iterable[int]) -> int:
    """The exit code that wins among several logs' or runs' (most telling first)."""
    present = set(codes)
    return next((code for code in EXIT_PRECEDENCE if code in present), EXIT_OK)
