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

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

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
    caller reads the file the streaming way instead) and ``OSError``."""
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
    worker's next batch)."""
    if decoded is None:
        assert worker is not None
        decoded = worker.take()
    typed = iter(decoded.typed)  # line numbers, ascending
    next_typed = next(typed, -1)
    typed_lines: list[Line] = []
    order: list[int | RecordItem | BadLine] = []  # an int: the index of a typed record
    for line in lines:
        if isinstance(line, BadLine):
            order.append(line)
        elif line[0] == next_typed:
            order.append(len(typed_lines))
            typed_lines.append(line)
            next_typed = next(typed, -1)
        else:
            order.append(_decode(decoder, line))
    if not typed_lines:
        for item in order:
            _refuse_restart(scan, item)  # type: ignore[arg-type]
            scan.add(item)  # type: ignore[arg-type]
        return
    chunk = _Chunk(scan, GradBatch(decoded, typed_lines))
    for item in order:
        if isinstance(item, int):
            chunk.typed(item)
        else:
            chunk.other(item)
    chunk.finish()


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


class _Chunk:
    """One chunk's typed records in file order: quiet ones wait in ``[start, next)`` until something else comes."""

    def __init__(self, scan: LogScan, batch: GradBatch) -> None:
        self.scan = scan
        self.batch = batch
        self.next = 0  # typed records seen so far
        self.start: int | None = None  # first of the waiting quiet records
        self.framed = 0  # typed records already in the frame columns
        self.quiet: dict[str, list[bool] | None] = {}  # per run: which records are quiet under its thresholds

    def typed(self, index: int) -> None:
        self.next = index + 1
        run = self.batch.fields["run"][index]
        quiet = self.quiet.get(run)
        if quiet is None and run in self.scan.engines:  # (a new run's first record is observed: that makes one)
            quiet = self.quiet[run] = self.batch.quiet(self.scan.engines[run].thresholds)
        if quiet and quiet[index]:
            if self.start is not None and self.batch.fields["run"][self.start] != run:
                self._flush(index)
            if self.start is None:
                self.start = index
            return
        self._flush(index)
        self.scan.observe(self.batch.record(index), frame=False)  # the frame columns take it with the others

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
