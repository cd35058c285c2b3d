"""Where a saved log's bytes come from: a file, stdin (``-``), a compressed file (gzip, bzip2 or xz, known by its
magic number whatever its name), or a rotated log's parts read oldest first as one log, as ``cat`` would join them.

Rotated parts are named the way logrotate names them (README "Reliability"): ``run.jsonl`` is the newest,
``run.jsonl.1`` the one before it, ``run.jsonl.2.gz`` an older one compressed; with ``dateext``, the parts
``run.jsonl-20240101`` (``.gz``; any ``dateformat`` of 8 digits or more, ``-``/``_`` between them:
``run.jsonl-2024-01-01``, ``run.jsonl-1704067200``) are older than ``run.jsonl``, the earlier date the older. A
log with parts of both kinds has its rotated parts ordered by when they were last modified, since no name orders
them. A part whose every byte begins a later part too is a copy someone kept (``cp run.jsonl run.jsonl-20261130``),
not a rotated part, and is not read: its records are in that part. zstd has no module in Python 3.11's standard
library: a zstd file is refused with a one-line error that says how to read it.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import stat
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing
from pathlib import Path
from typing import BinaryIO

STDIN = "-"
CHUNK = 1 << 20
#: The first bytes of each compressed format, and its name.
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
HEAD = max(map(len, MAGIC))
#: A log or one of its rotated parts: ``run.jsonl``, ``run.jsonl.1``, ``run.jsonl.2.gz``, ``run.jsonl.gz``, and
#: with logrotate's ``dateext`` (RHEL's default) a date of at least 8 digits, single ``-`` or ``_`` between them
#: (its ``dateformat``: ``run.jsonl-20240101``, ``run.jsonl-2024-01-01``, ``run.jsonl-2024010112``,
#: ``run.jsonl-1704067200.gz``, ``run.jsonl-20240101-1704067200.gz``); not ``run.jsonl-backup`` nor ``run.jsonl-2``.
PART = re.compile(
    r"(?P<log>.+\.jsonl)(?:\.(?P<number>[0-9]+)|-(?P<date>[0-9](?:[-_]?[0-9]){7,}))?(?:\.(?:gz|bz2|xz|zst))?"
)


class UnreadableLog(OSError):
    """A log that cannot be read for a reason its one-line message says whole (zstd, damaged compressed data)."""

    def __str__(self) -> str:
        return str(self.args[0])


def is_stdin(path: str | Path) -> bool:
    return str(path) == STDIN


def compression(head: bytes) -> str | None:
    """The compressed format whose magic number ``head`` starts with, or None."""
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)


def readable_kind(path: str | Path) -> bool:
    """Is ``path`` something a log can be read from to its end: stdin, a regular file or a pipe (``<(zcat x.gz)``)?
    Not a directory, nor a device that never ends. Raises ``OSError`` if it cannot be looked at."""
    if is_stdin(path):
        return True
    mode = os.stat(path).st_mode
    return stat.S_ISREG(mode) or stat.S_ISFIFO(mode)


def plain_file(path: str | Path) -> bool:
    """Is ``path`` a regular file that is not compressed (one that can be read at any offset, and again)?"""
    return not is_stdin(path) and os.path.isfile(path) and file_compression(path) is None


def file_compression(path: str | Path) -> str | None:
    """The compressed format of the regular file ``path`` (``gzip``, ``bzip2``, ``xz``, ``zstd``), known by its first
    bytes; None for a file that is not compressed, or not there, or that cannot be read (its reader says why)."""
    if is_stdin(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as handle:
            return compression(handle.read(HEAD))
    except OSError:
        return None


def chunks(sources: Sequence[str | Path], size: int = CHUNK) -> Iterator[bytes]:
    """The bytes of ``sources`` one after another, decompressed, each but the last ended with a newline if it does
    not end with one (a part whose last line a killed writer cut: that line stays one line, and the next part's
    first line, its run's header, stays whole). Raises ``OSError`` (a source that cannot be opened) and
    :class:`UnreadableLog` (zstd; compressed data that is damaged or cut short)."""
    for number, source in enumerate(sources, start=1):
        last = b"\n"
        for chunk in _chunks(source, size):
            yield chunk
            last = chunk[-1:]
        if last != b"\n" and number < len(sources):
            yield b"\n"


def _chunks(source: str | Path, size: int) -> Iterator[bytes]:
    name = "stdin" if is_stdin(source) else str(source)
    with ExitStack() as closing:
        raw: BinaryIO = sys.stdin.buffer if is_stdin(source) else closing.enter_context(open(source, "rb"))
        kind = compression(raw.peek(HEAD)[:HEAD] if hasattr(raw, "peek") else b"")
        if kind == "zstd":
            how = "zstd -dc FILE | moola-watch check -" if is_stdin(source) else f"zstd -d {source}"
            raise UnreadableLog(f"{name} is zstd-compressed, which this Python cannot read: decompress it first: {how}")
        try:
            if kind is None:
                while chunk := raw.read(size):
                    yield chunk
            else:
                yield from _gathered(closing.enter_context(DECOMPRESS[kind](raw)).read1, size)
        except (EOFError, lzma.LZMAError, zlib.error, OSError) as exc:
            if kind is None:
                raise
            raise UnreadableLog(f"{name} is {kind}-compressed, but its data is damaged or cut short ({exc})") from None


def _gathered(read1: Callable[[int], bytes], size: int) -> Iterator[bytes]:
    """Chunks of about ``size`` bytes gathered from ``read1`` (what one read of a compressed file decompressed
    to): where the data is damaged, what was decompressed before the damage is given before the error (a
    ``read(size)`` that fails keeps what it had), and the chunks stay large for the line decoder."""
    pieces: list[bytes] = []
    held = 0
    try:
        while piece := read1(size):
            pieces.append(piece)
            held += len(piece)
            if held >= size:
                yield b"".join(pieces)
                pieces, held = [], 0
    except Exception:
        if pieces:
            yield b"".join(pieces)
        raise
    if pieces:
        yield b"".join(pieces)


#: How each compressed format is read (closing one leaves the file under it open).
DECOMPRESS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bzip2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
}


_DATED, _NUMBERED, _CURRENT = range(3)


def _age_rank(part: re.Match[str]) -> tuple[int, str] | tuple[int, int]:
    """Sorts a log's parts oldest first: dated ones by the digits of their date (``2024-01-01`` as ``20240101``),
    numbered ones the highest number first, the current file last (two ranks of different kinds never compare
    their second items)."""
    if part["date"]:
        return _DATED, re.sub("[-_]", "", part["date"])
    if part["number"]:
        return _NUMBERED, -int(part["number"])
    return _CURRENT, 0


def log_parts(path: Path) -> tuple[Path, list[Path]] | None:
    """The rotated log that file ``path`` is a part of, and all its parts oldest first, if its folder holds
    another part of it; else None."""
    match = PART.fullmatch(path.name)
    if match is None or not path.parent.is_dir():
        return None
    for log, parts in saved_logs(path.parent):
        if len(parts) > 1 and path in parts:
            return log, parts
    return None


def directory_logs(directory: Path, note: Callable[[str], None] | None = None) -> list[tuple[Path, list[Path]]]:
    """Each log in ``directory``, by name: its ``*.jsonl`` file and rotated parts (``run.jsonl.1``,
    ``run.jsonl.2.gz``, ...), oldest first. A log of one part is named by that part; of several, by its newest
    name (``run.jsonl``, whether or not that part is still there). A log with numbered and dated parts, whose
    order between them no name tells, has its rotated parts ordered by when each was last modified, and
    ``note`` is told so, once per such log. Raises ``ValueError`` for two files that would be the same part
    (``run.jsonl`` and ``run.jsonl.gz``)."""
    ranked: dict[str, dict[tuple[int, str] | tuple[int, int], list[Path]]] = {}
    for child in directory.iterdir():
        match = PART.fullmatch(child.name)
        if match is None or child.is_dir():
            continue
        rank = _age_rank(match)
        ranked.setdefault(match["log"], {}).setdefault(rank, []).append(child)
    logs = []
    for name in sorted(ranked):
        parts = ranked[name]
        for rank, same in parts.items():
            if len(same) > 1:  # one may be a kept copy (run.jsonl-DATE beside logrotate's run.jsonl-DATE.gz)
                others = [part for other, paths in parts.items() if other != rank for part in paths]
                copies = {part: of for part in same if (of := _copied(part, others)) is not None}
                if len(same) - len(copies) != 1:
                    names = " and ".join(sorted(part.name for part in same))
                    raise ValueError(f"{directory}: {names} would be the same part of the rotated log {name}; keep one")
                for copy, of in copies.items():
                    if note is not None:
                        note(_copy_note(copy, of))
                parts[rank] = [part for part in same if part not in copies]
        ranks = sorted(parts)
        if {kind for kind, _ in ranks} >= {_NUMBERED, _DATED}:  # by when modified, the current file still last
            rotated = sorted((rank for rank in ranks if rank[0] != _CURRENT), key=lambda r: (_modified(parts[r][0]), r))
            ranks = rotated + [rank for rank in ranks if rank[0] == _CURRENT]
            if note is not None:
                said = ", ".join(parts[rank][0].name for rank in ranks)
                note(f"{directory}: the rotated log {name} has numbered ({name}.1) and dated ({name}-DATE) parts, "
                     f"whose order no name tells: read in the order they were last modified, {said}")  # fmt: skip
        paths = [parts[rank][0] for rank in ranks]
        logs.append((paths[0] if len(paths) == 1 else directory / name, paths))
    return logs


def _modified(path: Path) -> int:
    """When ``path`` was last modified (ns); 0 if it is gone already (its read will say so)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def saved_logs(directory: Path, note: Callable[[str], None] | None = None) -> list[tuple[Path, list[Path]]]:
    """:func:`directory_logs` to be read once, to their ends: each log's parts less the copies of a later part
    (:func:`without_copies`), a log left with one part named by it."""
    logs = []
    for log, parts in directory_logs(directory, note):
        kept = without_copies(parts, note)
        logs.append((kept[0] if len(kept) == 1 else log, kept))
    return logs


def without_copies(parts: Sequence[Path], note: Callable[[str], None] | None = None) -> list[Path]:
    """A log's ``parts`` (oldest first) less each one that is a copy of the start of a later part, and ``note``
    told of each. A rotation never makes one: logrotate moves or truncates the log, so the next part starts
    where the older one ended; a backup (``cp run.jsonl run.jsonl-20261130``, dated before or after the rotated
    parts) would otherwise be read as an older part and its runs judged twice. An empty part is no copy, and one
    that cannot be read is kept (its read will say why)."""
    kept = []
    for index, older in enumerate(parts[:-1]):
        newer = _copied(older, parts[index + 1 :])
        if newer is None:
            kept.append(older)
        elif note is not None:
            note(_copy_note(older, newer))
    return [*kept, *parts[-1:]]


def _copied(part: Path, others: Sequence[Path]) -> Path | None:
    """The first of ``others`` whose start ``part`` is a copy of (a backup dated before a real rotated part is
    still a copy of the live file), or None."""
    return next((other for other in others if _begins(other, part)), None)


def _copy_note(copy: Path, of: Path) -> str:
    return (f"{copy} begins {of.name} byte for byte: a copy of it, not a rotated part, so it is not read (its records "
            f"are in {of.name})")  # fmt: skip


def _begins(whole: Path, start: Path) -> bool:
    """Whether the (decompressed) bytes of ``start``, at least one, are the first bytes of ``whole``."""
    try:
        with closing(_chunks(start, CHUNK)) as starts, closing(_chunks(whole, CHUNK)) as wholes:
            pending, compared = b"", 0
            for chunk in starts:
                while len(pending) < len(chunk):
                    more = next(wholes, b"")
                    if not more:
                        return False
                    pending += more
                if not pending.startswith(chunk):
                    return False
                pending, compared = pending[len(chunk) :], compared + len(chunk)
            return compared > 0
    except (OSError, UnreadableLog):
        return False


#: The rank in the name of a rank's own log, where the trainer's ``per_rank`` puts it (before the suffix, if any:
#: ``run.jsonl`` -> ``run.rank1.jsonl``, ``run`` -> ``run.rank1``).
RANK_IN_NAME = re.compile(r"\.rank[0-9]+(?=(?:\.[^./]*)?$)")


def without_rank(path: str) -> str | None:
    """The log a rank's own log at ``path`` stands in for (``runs/a.rank1.jsonl`` -> ``runs/a.jsonl``); None for
    a log whose name holds no rank."""
    shared, found = RANK_IN_NAME.subn("", path)
    return shared if found else None


def rank_logs(path: Path) -> list[Path]:
    """The per-rank logs written in place of ``path`` (``run.jsonl`` -> ``run.rank0.jsonl``, ``run.rank1.jsonl``,
    ... beside it, as the trainer's ``per_rank`` names them), by rank; none where its folder cannot be read."""
    pattern = re.compile(re.escape(path.stem) + r"\.rank([0-9]+)" + re.escape(path.suffix))
    try:
        found = [(int(match[1]), entry) for entry in path.parent.iterdir() if (match := pattern.fullmatch(entry.name))]
    except OSError:
        return []
    return [entry for _rank, entry in sorted(found)]


def missing_log_hint(path: Path) -> str:
    """Words for a log that does not exist: where its per-rank logs are, if it has any (else nothing)."""
    found = rank_logs(path)
    if not found:
        return ""
    named = ", ".join(entry.name for entry in found[:4]) + (f" (+{len(found) - 4} more)" if len(found) > 4 else "")
    return f"; its ranks wrote per-rank logs beside it: {named} (give one of them, or the folder)"
