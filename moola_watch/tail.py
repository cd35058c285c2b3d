"""Following a growing JSONL file the way ``tail -F`` does, but for records.

:class:`LineDecoder` is the pure core: byte chunks in, items out (records, bad lines), holding back a
partial last line and never buffering more than one over-long line's cap. :class:`LogTail` is the file
shell: it reads from a saved offset to EOF, waits for a file that does not exist yet, and detects
deletion, rotation (a new inode at the path) and truncation (the size fell below the offset, or the head of the
file changed: a new run rewrote it). A file renamed or deleted away is not dropped at once: its writer notices
only later (the trainer's writer checks the path every 64 lines or 0.1 s) and appends to it until then, so the
old file stays open and is read to its end until the writer has moved on (see ``LogTail._retire``).
:class:`Waker` blocks until watchdog reports a change in the file's directory or a short interval passes, the
periodic stat being a safety net for dropped inotify events and the only mechanism under ``--poll``.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from moola_watch import schema
from moola_watch.schema import Record, Rejected

READ_CHUNK = 1 << 20
HEAD_BYTES = 256  # how much of the file's start identifies "the same file" for rewrite detection
#: A file renamed or deleted away that has grown for this long is taken as left by its writer (when the path names
#: nothing, or an empty file). The trainer's writer checks the path at least every 0.1 s while it writes; ``tail -F``
#: checks once a second.
RETIRE_QUIET_S = 1.0


class RecordItem(NamedTuple):
    """A valid record from line ``line_no`` (1-based) of ``path``."""

    path: str
    line_no: int
    record: Record


#: The category of a line a writer was still writing (or died writing): not a record lost from a run that went on.
CUT_OFF = "cut_off"
#: The category of a line the same as the one before it (a log shipper that sends at least once sent it twice):
#: taken once, as the writer wrote it once (every record holds its own time, so no two records are the same line).
REPEATED = "repeated"


class BadLine(NamedTuple):
    """A complete line that is not a valid record; skipped and counted. ``torn``: it begins as a record does (or
    with the NULs a crash can leave), so it may be a record whose end was never written."""

    path: str
    line_no: int
    rejected: Rejected
    torn: bool = False


class Notice(NamedTuple):
    """Something happened to the file: waiting, opened, truncated, rotated, deleted, poll_fallback."""

    path: str
    event: str
    message: str


class SkippedHistory(NamedTuple):
    """``follow --from-end`` skipped what the file held: the ``run_start`` of the run it ends in (its thresholds
    still judge what follows; None if there was none), its last whole record (a ``run_end`` says the run is
    over), and when the file was last written (unix seconds: the run is not stale from its start)."""

    path: str
    run_start: Record | None
    last: Record | None
    written: float


Item = RecordItem | BadLine | Notice | SkippedHistory


#: A complete line, not decoded yet: its number (1-based) and its bytes without the newline.
Line = tuple[int, bytes]

#: The UTF-8 byte order mark some Windows tools put at a file's start (PowerShell's redirection does).
BOM = b"\xef\xbb\xbf"


def without_bom(data: bytes) -> bytes:
    """A file's first line without a byte order mark: JSON may not start with one, the file may."""
    return data[len(BOM) :] if data.startswith(BOM) else data


class LineDecoder:
    """Turns consecutive byte chunks of one file into items. Pure: no I/O."""

    def __init__(self, path: str, max_line: int = schema.MAX_LINE_BYTES) -> None:
        self.path = path
        self.max_line = max_line
        self.line_no = 0
        self._partial = bytearray()
        self._overflow = 0  # bytes of the current over-long line dropped so far
        self._discarding = False  # dropping the rest of a line whose start we never saw
        self._previous = b""  # the last whole line (a line the same as it is a repeat)
        self.repeats = 0  # lines found the same as the one before them

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete last line held back (or dropped, if over-long)."""
        return len(self._partial) + self._overflow

    def reset(self) -> None:
        """Forget any partial line and restart line numbers (the file was truncated or replaced)."""
        self.line_no = 0
        self._previous = b""
        self.reset_partial()

    def reset_partial(self) -> None:
        self._partial.clear()
        self._overflow = 0
        self._discarding = False

    def start_mid_line(self) -> None:
        """The next bytes continue a line begun before we started reading: drop them up to its newline."""
        self.reset_partial()
        self._discarding = True

    def feed(self, chunk: bytes) -> list[RecordItem | BadLine]:
        """Decode every line that ``chunk`` completes."""
        return [line if isinstance(line, BadLine) else self.decode(line) for line in self.lines(chunk)]

    def decode(self, line: Line) -> RecordItem | BadLine:
        line_no, data = line
        result = schema.decode_record(data)
        if isinstance(result, Rejected):
            return BadLine(self.path, line_no, result, data.startswith((b'{"', b"\0")))
        return RecordItem(self.path, line_no, result)

    def lines(self, chunk: bytes) -> list[Line | BadLine]:
        """Every line that ``chunk`` completes, numbered, undecoded; blank lines left out, over-long ones (begun
        in an earlier chunk) already bad."""
        items: list[Line | BadLine] = []
        start = 0
        end = chunk.find(b"\n")
        if self._discarding:
            if end == -1:
                return items
            self._discarding = False
            start = end + 1
            end = chunk.find(b"\n", start)
        if end != -1 and (self._partial or self._overflow):
            self._take(chunk[start:end])
            line, overflow = bytes(self._partial), self._overflow
            self._partial.clear()
            self._overflow = 0
            self._emit(line, overflow, items)
            start = end + 1
        last = chunk.rfind(b"\n")
        if last >= start:
            lines = chunk[start:last].split(b"\n")
            if self.line_no == 0:
                lines[0] = without_bom(lines[0])
            numbered: Iterable[Line] = zip(range(self.line_no + 1, self.line_no + 1 + len(lines)), lines, strict=True)
            # (compared in C: a Python loop per line only in a chunk that has a repeat)
            if lines[0] == self._previous or any(map(operator.eq, lines, islice(lines, 1, None))):
                numbered = self._repeated(list(numbered))
            self.line_no += len(lines)
            self._previous = lines[-1]
            if b"" in lines or any(map(bytes.isspace, lines)):
                numbered = [line for line in numbered if isinstance(line, BadLine) or not _blank(line[1])]
            items += numbered
            start = last + 1
        if start < len(chunk):
            self._take(chunk[start:])
        return items

    def _repeated(self, numbered: list[Line]) -> list[Line | BadLine]:
        """``numbered`` with each line the same as the one before it (not blank) as a repeated bad line."""
        out: list[Line | BadLine] = []
        previous = self._previous
        for line_no, data in numbered:
            if data == previous and not _blank(data):
                self.repeats += 1
                out.append(BadLine(self.path, line_no, Rejected(REPEATED, "the same line as the one before it")))
            else:
                out.append((line_no, data))
            previous = data
        return out

    def finish(self) -> list[RecordItem | BadLine]:
        """The file ended for good (rotated away, deleted, read to its end offline): a held-back last line is a
        record if it is a whole one (a file whose writer, another tool, wrote no final newline), else a cut-off
        line."""
        if not self.pending_bytes:
            return []
        size, line = self.pending_bytes, bytes(self._partial)
        whole = not self._overflow and not self._discarding
        self.reset_partial()
        self.line_no += 1
        if whole and not _blank(line):
            item = self.decode((self.line_no, without_bom(line) if self.line_no == 1 else line))
            if isinstance(item, RecordItem):
                return [item]
        return [BadLine(self.path, self.line_no, Rejected(CUT_OFF, f"last line cut off after {size} bytes"))]

    def _take(self, piece: bytes) -> None:
        room = self.max_line + 1 - len(self._partial)
        if self._overflow or len(piece) > room:  # keep at most the cap; count the rest
            keep = max(room, 0)
            self._partial += piece[:keep]
            self._overflow += len(piece) - keep
        else:
            self._partial += piece

    def _emit(self, line: bytes, overflow: int, items: list[Line | BadLine]) -> None:
        if self.line_no == 0:
            line = without_bom(line)
        self.line_no += 1
        if overflow:
            size = len(line) + overflow
            reason = f"line of {size} bytes exceeds the {self.max_line}-byte limit"
            items.append(BadLine(self.path, self.line_no, Rejected("too_long", reason)))
        elif not _blank(line):
            items += self._repeated([(self.line_no, line)])
        self._previous = line


def _blank(line: bytes) -> bool:
    """Blank lines carry nothing and are not errors."""
    return not line or line.isspace()


def read_log(
    path: str | Path, chunk_size: int = READ_CHUNK, on_progress: Callable[[int], None] | None = None
) -> Iterator[RecordItem | BadLine]:
    """Every item of a finished file, streamed in chunks (memory stays bounded by the chunk and the cap);
    ``on_progress`` gets the bytes read so far after each chunk."""
    decoder = LineDecoder(str(path))
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            yield from decoder.feed(chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done)
    yield from decoder.finish()


_RUN_START = b'"run_start"'


def last_run_start(
    fd: int, end: int, chunk: int = 4 * READ_CHUNK, max_line: int = schema.MAX_LINE_BYTES
) -> Record | None:
    """The last valid ``run_start`` record among the whole lines before byte ``end`` of the open file ``fd``,
    read backwards a ``chunk`` (bytes) at a time: what a watcher that skips a log's history must still know (the
    run's thresholds). None if there is none."""
    data = os.pread(fd, min(end, chunk), max(0, end - chunk))
    pos = max(0, end - chunk)
    data = data[: data.rfind(b"\n") + 1]  # a last line still being written is not whole
    while True:
        cut = data.find(b"\n") + 1 if pos > 0 else 0  # before the first newline: a line that began earlier
        head, body = data[:cut], data[cut:]
        hit = body.rfind(_RUN_START)
        while hit >= 0:
            begin, stop = body.rfind(b"\n", 0, hit) + 1, body.find(b"\n", hit)
            record = schema.decode_record(body[begin:stop])
            if not isinstance(record, Rejected) and record["kind"] == schema.RUN_START:
                return record
            hit = body.rfind(_RUN_START, 0, begin)
        if pos == 0:
            return None
        if len(head) > max_line:  # a line no reader would take: not a record, never a run_start
            head = b""
        start = max(0, pos - chunk)
        data, pos = os.pread(fd, pos - start, start) + head, start


def last_record(fd: int, end: int, max_line: int = schema.MAX_LINE_BYTES) -> Record | None:
    """The record on the last whole line before byte ``end`` of the open file ``fd``, if it is one."""
    data = os.pread(fd, min(end, max_line + 1), max(0, end - max_line - 1))
    whole = data[: data.rfind(b"\n")]
    record = schema.decode_record(whole[whole.rfind(b"\n") + 1 :])
    return None if isinstance(record, Rejected) else record


class LogTail:
    """Follows one path. Call :meth:`poll` whenever something may have changed; it never blocks, and reads at
    most about one chunk of new data per call (:attr:`behind` says when more is waiting); a file being
    replaced or deleted is drained whole first."""

    def __init__(
        self,
        path: str | Path,
        *,
        from_end: bool = False,
        max_line: int = schema.MAX_LINE_BYTES,
        retire_quiet_s: float = RETIRE_QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.from_end = from_end
        self.retire_quiet_s = retire_quiet_s
        self._clock = clock
        self._retiring_since: float | None = None  # the open file left the path: last time it was seen to grow
        self.decoder = LineDecoder(str(self.path), max_line)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._head = b""
        self.offset = 0
        self.behind = False  # the last poll stopped at its budget: more is already waiting
        self._waiting_announced = False
        self._ever_opened = False

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._identity = None
        self._retiring_since = None

    def poll(self) -> list[Item]:
        """Read everything new: records, bad lines, and notices about the file itself."""
        items: list[Item] = []
        if self._fd is None and not self._open(items):
            return items
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stat = None
        except OSError as exc:
            items.append(Notice(str(self.path), "error", f"cannot stat: {exc.strerror}"))
            return items
        if stat is None or (stat.st_dev, stat.st_ino) != self._identity:
            return items + self._retire(stat)
        assert self._fd is not None
        if stat.st_size < self.offset or self._head_changed():
            items.append(
                Notice(str(self.path), "truncated", f"file truncated or rewritten (was {self.offset} bytes); rereading")
            )
            self.offset = 0
            self._head = b""
            self.decoder.reset()
        return items + self._read_to_end(READ_CHUNK)

    def _retire(self, stat: os.stat_result | None) -> list[Item]:
        """The path no longer names the open file (renamed away, as logrotate's ``create`` does, or deleted).

        Its writer may still be appending to it: it notices only at its next check of the path. So the old
        file is read on, poll after poll, and left only once its writer has moved on: the path names a file
        with data in it (one writer writes one file at a time, so once the new file has data the old one is
        complete), or the old file has not grown for ``retire_quiet_s``. The new file's size is taken before
        the old file is read: whatever the old file held by then is all it will ever hold."""
        items: list[Item] = []
        moved_on = stat is not None and stat.st_size > 0
        now = self._clock()
        if self._retiring_since is None:
            self._retiring_since = now
            if stat is None:  # say so at once; the file that reappears is announced as opened
                items.append(Notice(str(self.path), "deleted", "file deleted; waiting for it to reappear"))
                self._waiting_announced = True
        before = self.offset
        items += self._read_to_end(READ_CHUNK)
        if self.behind:  # a backlog in the old file: the rest of it on the next polls, before anything new
            return items
        if self.offset != before:  # still growing: its writer has not noticed yet
            self._retiring_since = now
        quiet = now - self._retiring_since >= self.retire_quiet_s
        if not (moved_on or quiet):
            return items
        # What was written to the old file before the writer moved on all counts; a partial line is cut off.
        items += self.decoder.finish()
        deleted = self._waiting_announced
        self.close()
        if stat is None:
            return items
        if not deleted:
            items.append(Notice(str(self.path), "rotated", "file replaced (rotated); reading the new one"))
        self._open(items)
        return items + self._read_to_end(READ_CHUNK)

    def _open(self, items: list[Item]) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self._waiting_announced:
                items.append(Notice(str(self.path), "waiting", "file does not exist yet; waiting for it"))
                self._waiting_announced = True
            return False
        except OSError as exc:
            items.append(Notice(str(self.path), "error", f"cannot open: {exc.strerror}"))
            return False
        stat = os.fstat(fd)
        waited = self._waiting_announced  # announce the file's arrival only if we said we were waiting
        self._fd = fd
        self._identity = (stat.st_dev, stat.st_ino)
        self._waiting_announced = False
        self.decoder.reset()
        self._head = b""
        self.offset = 0
        if self.from_end and not self._ever_opened:
            self.offset = stat.st_size  # skip history: start at the next complete line
            if self.offset and os.pread(fd, 1, self.offset - 1) != b"\n":
                self.decoder.start_mid_line()
            if self.offset:  # ... but not the run it belongs to: its run_start holds the thresholds it is judged by
                run_start, last = last_run_start(fd, self.offset), last_record(fd, self.offset)
                items.append(SkippedHistory(str(self.path), run_start, last, stat.st_mtime))
        if waited:
            items.append(Notice(str(self.path), "opened", f"reading from byte {self.offset}"))
        self._ever_opened = True
        return True

    def _head_changed(self) -> bool:
        if not self._head:
            return False
        assert self._fd is not None
        return os.pread(self._fd, len(self._head), 0) != self._head

    def _read_to_end(self, budget: int | None = None) -> list[RecordItem | BadLine]:
        """Read to EOF, or stop after about ``budget`` bytes (setting :attr:`behind`) so that catching up on a
        big backlog never holds more than a chunk's worth of records at once."""
        items: list[RecordItem | BadLine] = []
        self.behind = False
        if self._fd is None:
            return items
        read = 0
        while True:
            if budget is not None and read >= budget:
                self.behind = True
                return items
            try:
                chunk = os.pread(self._fd, READ_CHUNK, self.offset)
            except OSError:
                return items
            if not chunk:
                return items
            read += len(chunk)
            if len(self._head) < HEAD_BYTES:
                self._head = os.pread(self._fd, HEAD_BYTES, 0)
            self.offset += len(chunk)
            items += self.decoder.feed(chunk)


def _not_the_stop_race(record: logging.LogRecord) -> bool:
    """False for the error watchdog's inotify thread logs when a read it began ends after ``stop()`` (a race inside
    watchdog: nothing is lost, the watcher is exiting), which would be the last line a person sees."""
    return "called when the thread is inactive" not in record.getMessage()


class Waker:
    """Blocks in :meth:`wait` until watchdog reports a change under the watched directories, or ``interval``
    seconds pass. With ``poll=True``, or when watchdog cannot start (inotify limits), only the interval."""

    def __init__(self, directories: list[Path], *, poll: bool = False, interval: float = 0.5) -> None:
        self.interval = interval
        self._event = threading.Event()
        self._observer = None
        self._wake: object = None  # watchdog's handler, shared by every directory watched
        self.mode = "poll"
        self.failure: str | None = None
        if not poll:
            self._start_watchdog(directories)

    def _start_watchdog(self, directories: list[Path]) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        event = self._event

        class Wake(FileSystemEventHandler):
            def on_any_event(self, _event: FileSystemEvent) -> None:
                event.set()

        logging.getLogger("watchdog.observers.inotify").addFilter(_not_the_stop_race)  # added once (kept by identity)
        observer = Observer()
        self._wake = Wake()
        try:
            for directory in {d.resolve() for d in directories if d.is_dir()}:
                observer.schedule(self._wake, str(directory), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError as exc:  # e.g. inotify watch or instance limits reached
            self.failure = f"watchdog unavailable ({exc.strerror or exc}); polling every {self.interval}s"
            return
        self._observer = observer
        self.mode = "watchdog"

    def watch(self, directory: Path) -> None:
        """Wake on changes in ``directory`` too (a folder made after watching began); polled where watchdog cannot
        watch it."""
        if self._observer is None:
            return
        with contextlib.suppress(OSError):  # inotify limits: the interval still wakes the loop
            self._observer.schedule(self._wake, str(directory.resolve()), recursive=False)

    def wait(self, timeout: float | None = None) -> bool:
        """True if woken by a file event, False if the interval (or ``timeout``) passed."""
        woke = self._event.wait(self.interval if timeout is None else min(timeout, self.interval))
        self._event.clear()
        return woke

    def wake(self) -> None:
        self._event.set()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None
