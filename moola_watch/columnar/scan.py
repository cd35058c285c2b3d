"""Reading a whole log into a :class:`~moola_watch.analyze.LogScan` chunk by chunk, with the same result as feeding
it :func:`~moola_watch.tail.read_log`'s items one by one, at several times the speed.

Per chunk (about a MB of lines): ``grad_stats`` lines, the bulk of a log, are decoded typed (:mod:`.records`;
in a second process for a big file, :mod:`.worker`) and judged as columns; a record where some rule's
condition may hold, and every other line (run_start, task_balance, epoch, run_end, bad lines), goes through
the streaming engine one by one, ``task_balance`` and ``epoch`` lines decoded typed too (:mod:`.records`) and the
rest by :func:`~moola_watch.schema.decode_record`. Runs of quiet
``grad_stats`` records between them reach their run's engine in bulk, and the frame columns take the chunk's
``grad_stats`` rows in bulk.
"""

from __future__ import annotations

import gc
import os
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moola_watch import schema
from moola_watch.columnar.records import (
    FRAME_FIELDS,
    QUIET_FIELDS,
    DecodedGrad,
    GradBatch,
    UnsupportedInput,
    decode_grad_lines,
    decode_measurement,
)
from moola_watch.columnar.worker import DecodeWorker, WorkerFailed, can_fork_worker
from moola_watch.tail import BadLine, Line, LineDecoder, RecordItem

if TYPE_CHECKING:
    from moola_watch.analyze import LogScan

CHUNK_BYTES = 1 << 20
PARALLEL_MIN_BYTES = 32 << 20  # below this a second process costs about what it saves
AHEAD = 2  # chunks out at the worker at most; beyond that this process decodes the next chunk itself
QUEUED = 4  # chunks read but not yet judged, at most (memory stays a few chunks' worth)


def scan_into(
    scan: LogScan,
    path: str | Path,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    parallel: bool | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Read every line of the file at ``path`` into ``scan``. ``parallel`` decodes in a second process too (by
    default for a file of ``PARALLEL_MIN_BYTES`` or more, where :func:`can_fork_worker`); ``on_progress`` gets
    the bytes read so far after each chunk. Raises :class:`~moola_watch.columnar.records.UnsupportedInput` (the
    caller reads the file the streaming way instead) and ``OSError``.

    Python's cyclic garbage collector is paused meanwhile: the scan makes millions of objects (decoded records,
    their numbers, lists of them) and none that refer to each other in a cycle, and each collection walks them
    all again for nothing (0.08-0.11 s of the benchmark log's 2.5 s, 431 collections)."""
    with cyclic_gc_paused():
        _read(scan, path, chunk_bytes, parallel, on_progress)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting still frees what is dropped) while bulk data
    is built, then restore it as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read(
    scan: LogScan, path: str | Path, chunk_bytes: int, parallel: bool | None,
    on_progress: Callable[[int], None] | None,
) -> None:  # fmt: skip
    """:func:`scan_into`'s work."""
    frames = scan.columns is not None
    fields = FRAME_FIELDS if frames else QUIET_FIELDS
    decoder = LineDecoder(str(path))
    with open(path, "rb") as handle:
        if parallel is None:
            parallel = os.fstat(handle.fileno()).st_size >= PARALLEL_MIN_BYTES and can_fork_worker()
        worker = DecodeWorker(handle.fileno(), fields, frames) if parallel else None
        queue: deque[tuple[list[Line | BadLine], DecodedGrad | None]] = deque()  # None: out at the worker
        offset = line_start = 0  # where the chunk starts, and the first line it may complete
        longest = chunk_bytes + schema.MAX_LINE_BYTES  # a longer stretch is a line too long to decode: no need to send
        try:
            while chunk := handle.read(chunk_bytes):
                first_line = decoder.line_no + 1
                lines = decoder.lines(chunk)
                if decoder.repeats:  # (the worker's lines would count it): the streaming reader takes it once
                    raise UnsupportedInput("a line the same as the one before it")
                last = chunk.rfind(b"\n")
                end = offset + last  # where the chunk's last whole line ends (if it completes one)
                if worker is not None and worker.pending < AHEAD and 0 <= end - line_start <= longest:
                    worker.submit(line_start, end - line_start, first_line)
                    queue.append((lines, None))
                else:
                    queue.append((lines, decode_grad_lines(_whole(lines), fields, frames)))
                if last != -1:
                    line_start = end + 1
                offset += len(chunk)
                while queue and (queue[0][1] is not None or len(queue) > QUEUED or (worker and worker.ready())):
                    _judge(scan, decoder, *queue.popleft(), worker)
                if on_progress:
                    on_progress(offset)
            while queue:
                _judge(scan, decoder, *queue.popleft(), worker)
        except WorkerFailed as exc:
            raise UnsupportedInput(str(exc)) from None
        finally:
            if worker is not None:
                worker.close()
    for bad in decoder.finish():
        scan.add(bad)
    for engine in scan.engines.values():
        _ = engine.last_grad_stats  # decode now what a quiet run left for later, while a surprise can fall back


def _whole(lines: list[Line | BadLine]) -> list[Line]:
    return [line for line in lines if not isinstance(line, BadLine)]


def _judge(
    scan: LogScan, decoder: LineDecoder, lines: list[Line | BadLine], decoded: DecodedGrad | None,
    worker: DecodeWorker | None,
) -> None:  # fmt: skip
    """One chunk's lines, in order, into ``scan``; ``decoded`` is what typed decoding made of them (None: the
    worker's next batch). The typed records between two other lines are taken together (:meth:`_Chunk.typed_up_to`),
    not one by one."""
    if decoded is None:
        assert worker is not None
        decoded = worker.take()
    typed_at = _positions(lines, decoded.typed)
    if not len(typed_at):
        for line in lines:
            item = line if isinstance(line, BadLine) else _decode(decoder, line)
            _refuse_restart(scan, item)
            scan.add(item)
        return
    is_typed = np.zeros(len(lines), bool)
    is_typed[typed_at] = True
    others = np.flatnonzero(~is_typed)
    chunk = _Chunk(scan, GradBatch(decoded, [lines[index] for index in typed_at.tolist()]))
    for index, typed_before in zip(others.tolist(), np.searchsorted(typed_at, others).tolist(), strict=True):
        chunk.typed_up_to(typed_before)
        line = lines[index]
        chunk.other(line if isinstance(line, BadLine) else _decode(decoder, line))
    chunk.typed_up_to(len(typed_at))
    chunk.finish()


def _positions(lines: list[Line | BadLine], numbers: list[int]) -> np.ndarray:
    """Where in ``lines`` (numbered in ascending order) each of ``numbers`` (ascending line numbers, all of lines
    there) is. Usually no line is left out between a chunk's first and last (a blank one is), and a line's number
    less the first's is its position."""
    wanted = np.array(numbers, np.int64)
    if not wanted.size:
        return wanted
    first = _number(lines[0])
    if _number(lines[-1]) - first == len(lines) - 1:
        return wanted - first
    return np.searchsorted(np.fromiter(map(_number, lines), np.int64, len(lines)), wanted)


def _number(line: Line | BadLine) -> int:
    return line.line_no if isinstance(line, BadLine) else line[0]


def _decode(decoder: LineDecoder, line: Line) -> RecordItem | BadLine:
    """A line the ``grad_stats`` decoder left: typed if it is a ``task_balance`` or ``epoch`` record that
    :func:`decode_measurement` takes (a third less time than the contract's parser), else as the streaming reader
    decodes it. In this process even when a worker decodes the ``grad_stats`` lines: sending the records back
    would cost about what decoding them here does, and the worker's time too."""
    record = decode_measurement(line[1])
    return decoder.decode(line) if record is None else RecordItem(decoder.path, line[0], record)


def _refuse_restart(scan: LogScan, item: RecordItem | BadLine) -> None:
    """A run restarted under its own id gets a new key from its ``run_start`` on (``ID#2``), which the typed
    columns, keyed by the id, do not know: such a log is read the streaming way."""
    if isinstance(item, RecordItem) and scan.is_restart(item.record):
        raise UnsupportedInput("a run restarted under the same run id")


class _Quiet:
    """Per record of a batch, whether no rule can find its condition there (``flags``), and where one may."""

    def __init__(self, flags: np.ndarray) -> None:
        self.flags: list[bool] = flags.tolist()
        # ascending, then the batch's length; a list: bisect on it costs 0.03 µs, numpy's searchsorted 1.3 µs
        self._loud: list[int] = [*np.flatnonzero(~flags).tolist(), len(flags)]

    def next_loud(self, index: int) -> int:
        """The first record from ``index`` on where a condition may hold (the batch's length if none)."""
        return self._loud[bisect_left(self._loud, index)]


class _Chunk:
    """One chunk's typed records in file order: quiet ones wait in ``[start, next)`` until something else comes."""

    def __init__(self, scan: LogScan, batch: GradBatch) -> None:
        self.scan = scan
        self.batch = batch
        self.next = 0  # typed records seen so far
        self.start: int | None = None  # first of the waiting quiet records
        self.framed = 0  # typed records already in the frame columns
        self.quiet: dict[str, _Quiet] = {}  # per run: which records are quiet under its thresholds
        self.one_run = batch.runs() == 1

    def typed_up_to(self, stop: int) -> None:
        """The typed records from the next one up to ``stop`` (with no other line between them), as :meth:`typed`
        takes them one by one: in a chunk of one run, the quiet ones between two loud ones in one step."""
        while self.next < stop:
            quiet = self._quiet(self.batch.fields["run"][self.next]) if self.one_run else None
            if quiet is None:
                self.typed(self.next)
                continue
            upto = min(stop, quiet.next_loud(self.next))
            if upto > self.next:
                if self.start is None:
                    self.start = self.next
                self.next = upto
            if upto < stop:
                self.typed(upto)

    def typed(self, index: int) -> None:
        self.next = index + 1
        run = self.batch.fields["run"][index]
        quiet = self._quiet(run)
        if quiet is not None and quiet.flags[index]:
            if self.start is not None and self.batch.fields["run"][self.start] != run:
                self._flush(index)
            if self.start is None:
                self.start = index
            return
        self._flush(index)
        self.scan.observe(self.batch.record(index), frame=False)  # the frame columns take it with the others

    def _quiet(self, run: str) -> _Quiet | None:
        """Which records are quiet under ``run``'s thresholds; None while the run has no engine (its first record
        makes one) or if the rules cannot say."""
        quiet = self.quiet.get(run)
        if quiet is None and run in self.scan.engines:
            flags = self.batch.quiet(self.scan.engines[run].thresholds)
            if flags is not None:
                quiet = self.quiet[run] = _Quiet(flags)
        return quiet

    def other(self, item: RecordItem | BadLine) -> None:
        _refuse_restart(self.scan, item)
        self._flush(self.next)
        if isinstance(item, RecordItem) and item.record["kind"] == schema.GRAD_STATS:
            self._frame(self.next)  # a grad_stats record the typed decoder left: its row goes in file order
        self.scan.add(item)

    def finish(self) -> None:
        self._flush(self.next)
        self._frame(self.next)

    def _flush(self, stop: int) -> None:
        if self.start is not None:
            self.scan.observe_quiet(self.batch.quiet_run(self.batch.fields["run"][self.start], self.start, stop))
            self.start = None

    def _frame(self, stop: int) -> None:
        if self.scan.columns is not None and stop > self.framed:
            self.scan.columns.add_grad(*self.batch.rows(self.framed, stop))
        self.framed = stop
