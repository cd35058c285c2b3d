"""Appending records to a JSONL file so that a live reader never sees half a record, and training never
sees an exception.

Each record is one ``write`` of one whole line on an ``O_APPEND`` descriptor; the file is locked
(``flock``) so two processes never interleave bytes in it. A log whose last line was cut off by a crash
gets a newline first, so the cut line stays one bad line and every new record is whole. A log deleted or
replaced under the writer is noticed (the path no longer names our inode) and started afresh at the path,
so records do not vanish into an unlinked file. ``grad_stats`` lines, the ones written every step, check the
path only every ``IDENTITY_CHECK_LINES`` lines or ``IDENTITY_CHECK_S`` seconds (a ``stat`` is as long as the
``write``; ``tail -F`` checks once a second): the few written between a deletion and the next check go to the
deleted file, where a follower that has it open still reads them. Every other record checks first, so
``run_end`` always lands in the file at the path. A file started afresh opens with the ``header`` line (the
run's ``run_start``, as the monitor sets it), so that a rotated log's new file still says which run it is and
by which thresholds it is judged; so does our file when it was truncated to nothing under us (logrotate's
``copytruncate``), which a write notices from where it landed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from moola_watch.schema import GRAD_STATS, MAX_LINE_BYTES, encode_record

#: How often ``grad_stats`` lines check that the path still names the file written: in lines, and in seconds.
IDENTITY_CHECK_LINES = 64
IDENTITY_CHECK_S = 0.1


class JsonlRecordWriter:
    """Write records to ``target``: a path (created with its directories) or an open binary stream."""

    def __init__(self, target: str | Path | BinaryIO, *, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file we opened
        self._unchecked = 0  # lines written since the path was last found to name our file
        self._end = 0  # where our last line ended in the file (its size then)
        self._checked_at = time.monotonic()
        self._stream: BinaryIO | None = None
        self.path: Path | None = None
        self.header: bytes | None = None  # the line a file started afresh at the path opens with
        self.records_written = 0
        self.failed = False
        if isinstance(target, str | Path):
            self.path = Path(target)
            self._open_path(self.path)
        else:
            self._stream = target

    def _open_path(self, path: Path, *, make_dirs: bool = True) -> None:
        fd = None
        try:
            if make_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_fifo():  # opening one blocks until a reader comes, and a slow reader blocks each write
                raise OSError(errno.ESPIPE, "it is a pipe (FIFO), which would stall training until read")
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OSError(errno.EBUSY, _lock_holder(fd)) from None
            stat = os.fstat(fd)
            if stat.st_size and not _ends_with_newline(path, stat.st_size):
                os.write(fd, b"\n")
            self._fd = fd
            self._identity = (stat.st_dev, stat.st_ino)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.failed = True
        self._fd = None
        self._stream = None
        where = self.path if self.path is not None else "the gradient log stream"
        self._warn(
            f"WARNING: gradient log {where} cannot be written ({exc.strerror or exc}); training continues without it"
        )

    def write(self, record: Mapping[str, Any]) -> bool:
        """Append one record as one line; False (after one warning) if the log cannot be written."""
        return self.write_line(encode_record(record), record.get("kind"))

    def write_line(self, line: bytes, kind: str | None) -> bool:
        """Append one record already encoded as one ``\\n``-terminated line (``kind`` names it in a warning);
        False (after one warning) if the log cannot be written."""
        if self._fd is None and self._stream is None:
            return False
        if len(line) > MAX_LINE_BYTES:  # every reader would reject it: keep the log all good lines
            self._warn(
                f"WARNING: a {kind} record of {len(line)} bytes exceeds the readers' "
                f"{MAX_LINE_BYTES}-byte line limit and was not written"
            )
            return False
        if self._fd is not None and self._check_due(kind) and not self._check_identity():
            return False
        try:
            if self._fd is not None:
                end = _append(self._fd, line)
                if end == len(line) and self._end and self.header is not None:
                    self._restart_truncated(line)
                else:
                    self._end = end
            else:
                assert self._stream is not None
                self._stream.write(line)
                self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed stream
            self._fail(exc if isinstance(exc, OSError) else OSError(errno.EBADF, str(exc)))
            return False
        self._unchecked += 1
        self.records_written += 1
        return True

    def _restart_truncated(self, line: bytes) -> None:
        """Our last write landed at the start of the file: it was truncated to nothing under us (``copytruncate``
        copied it away). Put the ``header`` back first, so the file still says which run it is."""
        assert self._fd is not None and self.header is not None
        os.ftruncate(self._fd, 0)
        self._end = _append(self._fd, self.header + line)
        self._warn(f"WARNING: gradient log {self.path} was truncated under the writer; writing on from its start")

    def _check_due(self, kind: str | None) -> bool:
        return (
            kind != GRAD_STATS
            or self._unchecked >= IDENTITY_CHECK_LINES
            or time.monotonic() - self._checked_at >= IDENTITY_CHECK_S
        )

    def _check_identity(self) -> bool:
        """Start afresh if the path no longer names our file; False if the writer could not."""
        if self._replaced():
            self._reopen()
            if self._fd is None:
                return False
        self._unchecked = 0
        self._checked_at = time.monotonic()
        return True

    def _replaced(self) -> bool:
        assert self.path is not None
        try:
            stat = os.stat(self.path)
        except OSError:
            return True
        return (stat.st_dev, stat.st_ino) != self._identity

    def _reopen(self) -> None:
        """The path no longer names our file: start a new one there (not recreating removed directories)."""
        assert self.path is not None and self._fd is not None
        os.close(self._fd)
        self._fd = None
        self._open_path(self.path, make_dirs=False)
        if self._fd is None:
            return
        self._warn(f"WARNING: gradient log {self.path} was deleted or replaced; writing a new file there")
        if self.header is not None and not os.fstat(self._fd).st_size:
            try:
                self._end = _append(self._fd, self.header)
            except OSError as exc:
                self._fail(exc)

    def __del__(self) -> None:
        # A writer let go of unclosed (its run raised outside any ``with`` and nobody holds its monitor any more)
        # releases the log: its lock would keep every later run of this process from writing there.
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self, *, sync: bool = True) -> None:
        """Flush the file to disk (``fsync``) when ``sync``, then release it. A stream is left open (its
        owner closes it); it was flushed after every record."""
        fd, self._fd, self._stream = self._fd, None, None
        if fd is None:
            return
        try:
            if sync:
                os.fsync(fd)
        except OSError as exc:
            self._fail(exc)
        finally:
            os.close(fd)


def _lock_holder(fd: int) -> str:
    """Who holds the lock on the log ``fd`` is open on, in words. This process, when another of its descriptors
    has the same file open for appending: an earlier writer of it that was never closed (a run not ended, its
    monitor still held). Else another process (``flock`` locks are taken per open file, not per process)."""
    mine = os.fstat(fd)
    try:
        names = os.listdir("/dev/fd")  # this process's descriptors (Linux, macOS)
    except OSError:
        names = []
    for name in names:
        other = int(name)
        try:
            stat = os.fstat(other)
            appending = fcntl.fcntl(other, fcntl.F_GETFL) & os.O_APPEND
        except OSError:  # (the descriptor listdir itself used, closed by now)
            continue
        if other != fd and appending and (stat.st_dev, stat.st_ino) == (mine.st_dev, mine.st_ino):
            return (
                "an earlier run of this process that was not ended still holds it: end that run (leave its `with` "
                "block, or call its monitor's on_run_end()) or give this run another log"
            )
    return "another process is writing this log"


def _append(fd: int, lines: bytes) -> int:
    """Write whole lines to ``fd`` (``O_APPEND``) in one ``write``, or none of them (``OSError`` ENOSPC); return
    where they ended: the file's size just after (an ``lseek``, 0.2 us)."""
    written = os.write(fd, lines)
    if written != len(lines):  # a short write on a regular file means the disk is full
        # Take the partial line back so the file stays whole lines; then fail as a full disk.
        os.ftruncate(fd, os.fstat(fd).st_size - written)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return os.lseek(fd, 0, os.SEEK_CUR)


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as existing:
        existing.seek(size - 1)
        return existing.read(1) == b"\n"
