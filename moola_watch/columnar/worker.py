"""A second process that decodes ``grad_stats`` lines while this one judges what was decoded before.

It reads the same open file (the descriptor is inherited, and ``pread`` leaves this process's position alone):
a request names a stretch of whole lines (offset, length, number of its first line),
and :class:`~moola_watch.columnar.records.DecodedGrad` comes back as msgpack bytes over a pipe (plain data:
strings, numbers, bytes). Requests are a few bytes, so sending one never waits on the worker. The process is
forked, so it starts at once with the modules already imported; forking is safe only in a process with no
other thread (:func:`can_fork_worker`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection

import msgspec

from moola_watch.columnar.records import DecodedGrad, decode_grad_lines
from moola_watch.tail import without_bom

_REQUEST = msgspec.msgpack.Decoder(tuple[int, int, int])
_DECODED = msgspec.msgpack.Decoder(DecodedGrad)
_ENCODER = msgspec.msgpack.Encoder()


def can_fork_worker() -> bool:
    """Whether a worker helps and is safe: this process may use a second CPU and one is idle (the last minute's
    load average leaves one: on a machine busy with other work a second process only takes turns with this one),
    and no other thread runs here (one holding a lock at the fork would leave it held forever in the child)."""
    cpus = len(os.sched_getaffinity(0))
    return cpus > 1 and os.getloadavg()[0] <= cpus - 1 and threading.active_count() == 1


class WorkerFailed(Exception):
    """The worker is gone, or found the file shorter than the stretch asked for (truncated while being read)."""


class DecodeWorker:
    """Decodes stretches of the open file ``fd`` in another process, first in, first out; ``pending`` are out and
    not back yet."""

    def __init__(self, fd: int, fields: Sequence[str], names: bool) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, fd, tuple(fields), names), daemon=True)
        self._process.start()
        child.close()
        self.pending = 0

    def submit(self, offset: int, length: int, first_line: int) -> None:
        """Decode the ``length`` bytes of whole lines at ``offset``, the first of them line ``first_line``."""
        try:
            self._conn.send_bytes(_ENCODER.encode((offset, length, first_line)))
        except OSError as exc:
            raise WorkerFailed(f"decoding process gone ({exc})") from None
        self.pending += 1

    def ready(self) -> bool:
        """Whether the oldest stretch is back (so that taking it will not wait)."""
        return self._conn.poll()

    def take(self) -> DecodedGrad:
        """The oldest stretch, decoded; waits for it. Raises :class:`WorkerFailed`."""
        self.pending -= 1
        try:
            message = self._conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise WorkerFailed(f"decoding process gone ({exc!r})") from None
        if not message:
            raise WorkerFailed("the file became shorter while it was read")
        return _DECODED.decode(message)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # it is gone already
            self._conn.send_bytes(b"")
        self._conn.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()


def _serve(conn: Connection, fd: int, fields: tuple[str, ...], names: bool) -> None:
    """The worker's loop: a stretch named, its :class:`DecodedGrad` (or b"" for a short read) back, until an
    empty request."""
    while message := conn.recv_bytes():
        offset, length, first_line = _REQUEST.decode(message)
        data = os.pread(fd, length, offset)
        if len(data) < length:
            conn.send_bytes(b"")
            continue
        lines = data.split(b"\n")
        if first_line == 1:
            lines[0] = without_bom(lines[0])
        numbered = zip(range(first_line, first_line + len(lines)), lines, strict=True)
        conn.send_bytes(_ENCODER.encode(decode_grad_lines(numbered, fields, names)))
