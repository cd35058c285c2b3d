"""Reading a whole log into a :class:`~moola_watch.analyze.LogScan` chunk by chunk, with the same result as feeding
it :func:`~moola_watch.tail.read_log`'s items one by one, at several times the speed.

Per chunk (a few MB of lines): ``grad_stats`` lines, the bulk of a log, are decoded typed (:mod:`.records`)
and judged as columns; a record where some rule's condition may hold, and every other line (run_start,
task_balance, epoch, run_end, bad lines), goes through the streaming engine one by one, decoded by
:func:`~moola_watch.schema.decode_record`. Runs of quiet ``grad_stats`` records between them reach their
run's engine in bulk, and the frame columns take the chunk's ``grad_stats`` rows in bulk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from moola_watch import schema
from moola_watch.columnar.records import GradBatch, GradStats, decode_grad_stats
from moola_watch.tail import BadLine, Line, LineDecoder, RecordItem

if TYPE_CHECKING:
    from moola_watch.analyze import LogScan

CHUNK_BYTES = 4 << 20


def scan_into(
    scan: LogScan, path: str | Path, *, chunk_bytes: int = CHUNK_BYTES, on_progress: Callable[[int], None] | None = None
) -> None:
    """Read every line of the file at ``path`` into ``scan``; ``on_progress`` gets the bytes read so far after each
    chunk. Raises :class:`~moola_watch.columnar.records.UnsupportedInput` (the caller reads the file the streaming
    way instead) and ``OSError``."""
    decoder = LineDecoder(str(path))
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            _scan_lines(scan, decoder, decoder.lines(chunk))
            done += len(chunk)
            if on_progress:
                on_progress(done)
    for bad in decoder.finish():
        scan.add(bad)
    for engine in scan.engines.values():
        _ = engine.last_grad_stats  # decode now what a quiet run left for later, while a surprise can fall back


def _scan_lines(scan: LogScan, decoder: LineDecoder, lines: list[Line | BadLine]) -> None:
    typed: list[GradStats] = []
    typed_lines: list[Line] = []
    order: list[int | RecordItem | BadLine] = []  # an int: the index of a typed record
    for line in lines:
        record = None if isinstance(line, BadLine) else decode_grad_stats(line[1])
        if record is not None:
            order.append(len(typed))
            typed.append(record)
            typed_lines.append(line)  # type: ignore[arg-type]
        else:
            order.append(line if isinstance(line, BadLine) else decoder.decode(line))
    if not typed:
        for item in order:
            scan.add(item)  # type: ignore[arg-type]
        return
    chunk = _Chunk(scan, GradBatch(typed, typed_lines))
    for item in order:
        if isinstance(item, int):
            chunk.typed(item)
        else:
            chunk.other(item)
    chunk.finish()


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
