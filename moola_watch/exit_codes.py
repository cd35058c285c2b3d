"""The exit codes every ``moola-watch`` command shares (``check``'s, documented in the README), and which one a
log's runs give."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from moola_watch.analyze import VERDICT_NO_MEASUREMENTS, LogScan, run_verdict
from moola_watch.counts import counted
from moola_watch.tail import CUT_OFF, REPEATED

EXIT_OK, EXIT_ALERT, EXIT_USAGE, EXIT_NO_MEASUREMENTS = 0, 1, 2, 3
#: Which exit code wins when several logs or runs disagree (most telling first).
EXIT_PRECEDENCE = (EXIT_USAGE, EXIT_ALERT, EXIT_NO_MEASUREMENTS, EXIT_OK)


@dataclass(frozen=True)
class BadLines:
    """A log's rejected lines as the exit code judges them: ``counted`` are all but the ``cut`` ones (cut off
    mid-write) and the ``repeated`` ones (the same line twice in a row, taken once), and fail the log when there
    are more than ``limit`` (``--max-bad-lines``); ``first`` is where the first counted one is and why (None if
    not known)."""

    total: int
    counted: int
    limit: int
    first: tuple[int, str] | None = None
    cut: int = 0
    repeated: int = 0

    @property
    def fail(self) -> bool:
        return self.counted > self.limit

    def describe(self) -> str:
        """One plain sentence: how many lines were not judged, the first one's reason, and whether they fail;
        empty if there were none."""
        said = []
        if self.counted:
            lines = f"{counted(self.counted, 'line')} not judged"
            if self.first is not None:
                lines += f", the first at line {self.first[0]}: {self.first[1]}"
            said.append(lines)
            if self.fail:
                said.append(f"--max-bad-lines {self.counted} accepts {'them' if self.counted != 1 else 'it'}")
            else:
                said.append(f"accepted: --max-bad-lines {self.limit}")
        if self.cut:
            said.append(f"{_lines(self.cut)} cut off mid-write (a writer stopped): not counted")
        if self.repeated:
            said.append(f"{_lines(self.repeated)} the same as the line before (sent twice): taken once, not counted")
        return "; ".join(said)


def _lines(count: int) -> str:
    return "a line" if count == 1 else f"{count} lines"


#: Rejected lines that do not count against a log: nothing of a run that went on was lost.
NOT_COUNTED = frozenset({CUT_OFF, REPEATED})


def bad_lines(scan: LogScan, max_bad_lines: int = 0) -> BadLines:
    """``scan``'s rejected lines against ``max_bad_lines``: all but cut-off and repeated lines count."""
    cut, repeated = scan.bad_by_category.get(CUT_OFF, 0), scan.bad_by_category.get(REPEATED, 0)
    first = next(
        ((bad.line_no, bad.rejected.reason) for bad in scan.bad_details if bad.rejected.category not in NOT_COUNTED),
        None,
    )
    return BadLines(scan.bad_lines, scan.bad_lines - cut - repeated, max_bad_lines, first, cut, repeated)


def exit_code(scan: LogScan, runs: Sequence[str], fail_on: str, max_bad_lines: int = 0) -> int:
    """``check``'s exit code for ``runs`` of one log: more than ``max_bad_lines`` rejected lines fail it (1: a log
    with lines nobody judged is not a pass, whichever run they belonged to; cut-off and repeated lines aside); else
    :func:`runs_exit_code`."""
    if bad_lines(scan, max_bad_lines).fail:
        return EXIT_ALERT
    return runs_exit_code(scan, runs, fail_on)


def runs_exit_code(scan: LogScan, runs: Sequence[str], fail_on: str) -> int:
    """The exit code ``runs`` of one log give by their own records: an alert at or above ``fail_on`` fails (1);
    else a run that measured nothing is no pass (3); else 0."""
    if scan.fails(fail_on, runs):
        return EXIT_ALERT
    if any(run_verdict(scan.engines[run]) == VERDICT_NO_MEASUREMENTS for run in runs):
        return EXIT_NO_MEASUREMENTS
    return EXIT_OK


def worst(codes: Iterable[int]) -> int:
    """The exit code that wins among several logs' or runs' (most telling first)."""
    present = set(codes)
    return next((code for code in EXIT_PRECEDENCE if code in present), EXIT_OK)
