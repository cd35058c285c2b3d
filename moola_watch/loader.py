"""Logs as pandas DataFrames, for notebooks (:func:`load`) and for ``analyze --csv`` (:func:`write_csv`).

The tables, one row per measurement: ``grad`` (total/mean/max/... norm per grad_stats record), ``layers`` (one
row per layer per record), ``balance`` (ratio, cosines, per-task norms, shares, losses, weights), ``epochs``
(losses, metrics, learning rate), ``alerts`` (as the rules judged them, with recommendations), ``runs``.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from moola_watch import analyze
from moola_watch.config_keys import field_spelled
from moola_watch.floors import checked_floors
from moola_watch.rules import Thresholds
from moola_watch.sources import is_stdin, saved_logs

TABLES = ("grad", "layers", "balance", "epochs", "alerts", "runs")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class NotALogError(ValueError):
    """A file with not one valid record: another tool's file, or no log at all (``check`` exits 2 on it)."""


def load(
    path: str | Path,
    thresholds: Thresholds | Mapping[str, float] | None = None,
    *,
    task_floors: Mapping[str, float] | None = None,
) -> dict[str, pd.DataFrame]:
    """The DataFrames of one log, or of every ``*.jsonl`` in a directory, by table name (see :data:`TABLES`).

    The same tables ``moola-watch analyze --csv`` writes, each with a ``log`` column first (the file a row came
    from), so one call gives a whole sweep. Each run is judged by the thresholds its ``run_start`` recorded, as
    ``check`` judges it, unless ``thresholds`` says otherwise: a :class:`Thresholds` judges every run by all of its
    values; a mapping of threshold names to values (``{"window": 20}``) overrides those alone, as ``--config`` or a
    flag does. Raises ``ValueError`` for an unknown name or a value out of range. ``task_floors`` (task -> loss,
    its loss at the end of a run on it alone) beat the training floors a run recorded, as ``--task-floor`` does.
    A log compressed with gzip, bzip2 or xz (``run.jsonl.gz``) is read decompressed, whatever its name; in a
    directory, a rotated log's parts (``run.jsonl.1``, ``run.jsonl``) are read oldest first as one log (those of a
    log with numbered and dated parts by when each was last modified, and a warning says so). Raises
    ``FileNotFoundError`` when there is no log there, ``OSError`` when one cannot be read or decompressed,
    :class:`NotALogError` when the file holds not one valid record (as ``check`` calls it "not a moola log");
    such a file in a directory is skipped with a warning, unless no file there is a log.
    """
    if isinstance(thresholds, Thresholds):
        chosen, overridden = thresholds, Thresholds.names()
    else:  # spelled as the flags and the config allow too: collapse-high
        given = field_spelled(thresholds or {}, sorted(Thresholds.names()), "thresholds", kind="threshold(s)")
        chosen, overridden = Thresholds.from_mapping(given), frozenset(given)
    floors = checked_floors(task_floors or {})
    path = Path(path)
    logs = saved_logs(path, note=_note) if path.is_dir() else [(path, [path])]
    if not logs:
        raise FileNotFoundError(f"no *.jsonl log in {path}")
    per_log, foreign = [], []
    for log, parts in logs:  # a rotated log's parts oldest first, as one log (as check reads a folder)
        scan = analyze.scan_log(log, chosen, parts=parts if len(parts) > 1 else None, overridden=overridden,
                                floors=floors, frames=True)  # fmt: skip
        if not scan.records:
            foreign.append(NotALogError(analyze.not_a_log(log, [scan])))
            continue
        frames = analyze.to_frames(scan)
        per_log.append({name: frame.assign(log=str(log))[["log", *frame.columns]] for name, frame in frames.items()})
    if not per_log:
        raise foreign[0]
    for error in foreign:
        warnings.warn(f"skipped: {error}", stacklevel=2)
    return {name: _concat([frames[name] for frames in per_log]) for name in TABLES}


def _note(message: str) -> None:
    """How a directory's log is read (its numbered and dated parts ordered by time), as a warning to ``load``'s
    caller."""
    warnings.warn(message, stacklevel=4)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Tables of several logs as one; the empty ones only lend their columns (pandas warns on concatenating them)."""
    filled = [frame for frame in frames if not frame.empty]
    if len(filled) == 1:
        return filled[0]
    if not filled:
        return frames[0]
    return pd.concat(filled, ignore_index=True)


def log_labels(paths: Sequence[Path], *, for_files: bool = True) -> dict[Path, str]:
    """A short, unique file-name label per log: its stem, or, where stems clash (``a/run.jsonl``,
    ``b/run.jsonl``), the stem behind as many parent folders as it takes to tell them apart (``a-run``). Not
    ``for_files``, a label to show rather than to name a file by: the folders joined by ``/`` and no character
    replaced (``a/run``)."""
    absolute = {path: Path("stdin" if is_stdin(path) else path).absolute() for path in paths}  # "-" names nothing
    files = list(dict.fromkeys(absolute.values()))

    def label(file: Path, depth: int) -> str:
        parts = [*file.parts[1:][-1 - depth : -1], file.stem]
        return _UNSAFE.sub("_", "-".join(parts)) if for_files else "/".join(parts)

    def clashes(file: Path, depth: int) -> bool:
        return any(label(other, depth) == label(file, depth) for other in files if other != file)

    by_file = {}
    for file in files:
        depth = 0
        while depth < len(file.parts) and clashes(file, depth):
            depth += 1
        by_file[file] = label(file, depth)
    counts, seen = Counter(by_file.values()), Counter[str]()
    for file, name in by_file.items():  # still shared across depths (x/a-run.jsonl, a/run.jsonl): numbered
        if counts[name] > 1:
            seen[name] += 1
            by_file[file] = f"{name}-{seen[name]}"
    return {path: by_file[absolute[path]] for path in paths}


def write_csv(directory: Path, label: str, frames: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Each table as ``directory/label.table.csv`` (an empty table as its header line); the paths written. A
    list or a mapping in a cell (an alert's ``layers``) is written as JSON (``["a.weight", "b.bias"]``), which
    any reader parses, never as Python's repr; a missing step or epoch is an empty cell, the others whole
    numbers (``12``, not ``12.0``)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames.items():
        path = directory / f"{label}.{name}.csv"
        _json_cells(frame).to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
        written.append(path)
    return written


def _json_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each list or mapping in a column of objects as its JSON text."""
    nested = [
        column
        for column in frame.columns
        if frame[column].dtype == object and frame[column].map(lambda v: isinstance(v, list | dict)).any()
    ]
    if not nested:
        return frame
    return frame.assign(
        **{
            column: frame[column].map(lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v)
            for column in nested
        }
    )
