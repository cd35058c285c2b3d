"""Typed decoding of ``grad_stats`` lines (msgspec: parsing and validation in C) and a batch of them as columns;
and of ``task_balance`` and ``epoch`` lines, into the dicts the engine takes.

:class:`GradStats` declares the schema's ``grad_stats`` fields with the types :func:`moola_watch.schema.decode_record`
accepts as they stand, and :class:`TaskBalance` and :class:`Epoch` theirs; a line they refuse (a non-finite
number written as ``"nan"``, a number as a string, an integer past 64 bits, a missing or unknown field, not JSON
at all) is left to ``decode_record``, which names the problem exactly as the streaming reader does.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import chain, pairwise
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson
from msgspec.structs import astuple

from moola_watch import schema
from moola_watch.rules.columns import GradColumns
from moola_watch.rules.engine import quiet_grad_stats
from moola_watch.rules.evidence import QuietGradStats
from moola_watch.rules.thresholds import Thresholds
from moola_watch.tail import Line

# decode_record keeps a JSON integer as an int and converts a 65-bit one to a float: beyond int64, let it decide.
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Number = float | _Int


class GradStats(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """One ``grad_stats`` record, schema 1. A field that may be absent but not null defaults to None (or ())
    without admitting null. Every field is typed, and a line with any other field is left to ``decode_record``:
    a field skipped unread could hold a number the contract's parser refuses (``1e99999``), which would make a
    bad line a good one."""

    schema: Annotated[int, msgspec.Meta(ge=1, le=schema.SCHEMA_VERSION)]
    kind: Literal["grad_stats"]
    run: str
    time: _Number
    layer_norms: dict[str, float]  # JSON integers become floats, as decode_record's number maps make them
    total_norm: _Number
    mean_norm: _Number
    std_norm: _Number
    min_norm: _Number
    max_norm: _Number
    nonfinite_count: _Int
    epoch: _Int | None = None
    step: _Int | None = None
    nonfinite_layers: list[str] = ()  # type: ignore[assignment]
    cost_ms: _Number = None  # type: ignore[assignment]
    amp: dict[str, _Number | bool | None] = None  # type: ignore[assignment]
    rank: _Int = None  # type: ignore[assignment]  # a per-rank log's
    # a model of more tensors than the limit: how they are grouped, and each group's size
    layer_groups: dict[str, _Int | list[_Int]] = None  # type: ignore[assignment]
    top_layers: dict[str, _Number] = None  # type: ignore[assignment]


#: The scalar fields a batch keeps as columns: the grad frame's, of which the rules' evidence reads the first.
QUIET_FIELDS = ("run", "epoch", "step", "time", "mean_norm", "max_norm", "nonfinite_count")
FRAME_FIELDS = (*QUIET_FIELDS, "total_norm", "std_norm", "min_norm", "cost_ms")
_DECODER = msgspec.json.Decoder(GradStats)
#: Where each field is in a record's ``astuple`` (a struct of layer names keeps GradStats' fields where they are).
_AT = {name: index for index, name in enumerate(GradStats.__struct_fields__)}


def decode_grad_stats(data: bytes, layout: msgspec.json.Decoder | None = None) -> GradStats | None:
    """The line as a typed ``grad_stats`` record, or None if it is not one this decoder takes. With ``layout`` (a
    decoder from :func:`_laid_out`), its layer norms go into that struct when the line has exactly its names,
    else into a dict."""
    if b'"grad_stats"' not in data or len(data) > schema.MAX_LINE_BYTES:
        return None
    record = (layout is not None and _typed(layout, data)) or _typed(_DECODER, data)
    # A big model's record judges its top_layers, not the groups the columns would summarise: the engine reads it.
    return record if record is None or record.layer_groups is None else None


def _typed(decoder: msgspec.json.Decoder, data: bytes) -> Any:
    """The line as ``decoder`` decodes it, or None if it refuses it."""
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested past msgspec's depth limit
        return None


_NumberMap = dict[str, float]  # JSON integers become floats, as decode_record's number maps make them


class _Measurement(msgspec.Struct, gc=False, forbid_unknown_fields=True, tag_field="kind", kw_only=True):
    """The fields every ``task_balance`` and ``epoch`` record has (the kind is the tag). As in :class:`GradStats`,
    a field that may be absent but not null defaults to None without admitting null, and a line with a field
    not declared is left to ``decode_record``."""

    schema: Annotated[int, msgspec.Meta(ge=1, le=schema.SCHEMA_VERSION)]
    run: str
    time: _Number
    epoch: _Int | None = None
    step: _Int | None = None


class TaskBalance(_Measurement, tag=schema.TASK_BALANCE):
    norms: _NumberMap
    ratio: _Number | None = None
    cosine: _Number | None = None
    cosines: _NumberMap = None  # type: ignore[assignment]
    shares: _NumberMap = None  # type: ignore[assignment]
    raw_norms: _NumberMap = None  # type: ignore[assignment]
    losses: _NumberMap = None  # type: ignore[assignment]
    weights: _NumberMap = None  # type: ignore[assignment]
    scope: str = None  # type: ignore[assignment]
    left_out: list[str] = None  # type: ignore[assignment]
    persistence: _NumberMap = None  # type: ignore[assignment]


class Epoch(_Measurement, tag=schema.EPOCH):
    train_loss: _Number
    val_loss: _Number | None = None
    lr: _Number | None = None
    duration_s: _Number | None = None
    task_losses: _NumberMap = None  # type: ignore[assignment]
    metrics: _NumberMap = None  # type: ignore[assignment]


_MEASUREMENT = msgspec.json.Decoder(TaskBalance | Epoch)
#: Per kind, its number maps: the only fields decode_record changes (JSON integers in them become floats).
_NUMBER_MAPS = {
    kind.__struct_config__.tag: tuple(field.name for field in msgspec.structs.fields(kind) if field.type == _NumberMap)
    for kind in (TaskBalance, Epoch)
}


def decode_measurement(data: bytes) -> schema.Record | None:
    """A ``task_balance`` or ``epoch`` line as :func:`moola_watch.schema.decode_record` makes it (the same dict, its
    keys in the line's order), or None if it is not one this decoder takes.

    The typed decoder only judges the line; the dict is parsed as ``decode_record`` parses it, which keeps every
    value as it stands but turns the integers of number maps into floats: those maps come from the typed record."""
    if len(data) > schema.MAX_LINE_BYTES:
        return None
    try:
        typed = _MEASUREMENT.decode(data)
        record = orjson.loads(data)
    except (msgspec.DecodeError, RecursionError, orjson.JSONDecodeError):  # left to decode_record, which says why
        return None
    for name in _NUMBER_MAPS[record["kind"]]:
        if name in record:
            record[name] = getattr(typed, name)
    return record


class DecodedGrad(msgspec.Struct, gc=False):
    """What typed decoding makes of some lines, in plain data (it may come from another process as msgpack, whose
    binary fields come back as memoryviews of the message: no copy).

    ``typed`` lists the numbers of the lines that decoded; for each of those, in order: ``fields`` holds each
    scalar field's values, ``counts`` (int64) its number of layers, ``values`` (float64) all layer norms record
    after record, ``listed`` the length of its ``nonfinite_layers``. When layer names are asked for, ``key_sets``
    holds each new list of them, in order, and ``key_starts`` the record where it begins (a model's layers rarely
    change: usually one list for the whole batch).
    """

    typed: list[int]
    fields: dict[str, tuple[Any, ...]]
    counts: memoryview
    values: memoryview
    listed: list[int]
    key_sets: list[list[str]]
    key_starts: list[int]


@lru_cache(maxsize=16)
def _laid_out(names: tuple[str, ...]) -> msgspec.json.Decoder | None:
    """A decoder of the ``grad_stats`` lines whose ``layer_norms`` hold exactly ``names`` (each at least once, no
    other), into a struct of them: the values :class:`GradStats`' dict has (the same number decoder makes them),
    every other field the same, in 70% of the time a dict takes. A struct matches fields by name, so it holds the
    values in its own order, whatever the line's. None if msgspec cannot name a field so (a quote, a backslash or
    a control character in a name): such lines decode into dicts."""
    try:
        norms = msgspec.defstruct(
            "LayerNorms", [(f"n{i}", float, msgspec.field(name=name)) for i, name in enumerate(names)],
            gc=False, forbid_unknown_fields=True,
        )  # fmt: skip
    except ValueError:
        return None
    record = msgspec.defstruct(
        "LaidOutGradStats", [("layer_norms", norms)], bases=(GradStats,), gc=False, forbid_unknown_fields=True
    )
    return msgspec.json.Decoder(record)


def decode_grad_lines(lines: Iterable[Line], fields: Sequence[str], names: bool) -> DecodedGrad:
    """Decode what :func:`decode_grad_stats` takes of ``lines`` (numbered), keeping ``fields`` (and the layer names
    if ``names``).

    Without the names (``check``), a line of the layer names the one before it had decodes into a struct of them
    (:func:`_laid_out`), whose values are in the struct's order: the rules read a quiet record's extremes, which
    no order changes, and decode any other record again from its line. Only the long table of layer norms keeps
    each record's order, which only a dict holds (proving it from a line's bytes costs more than the struct saves:
    ``benchmarks/README.md``, Session 9)."""
    typed, records = [], []
    layout: msgspec.json.Decoder | None = None  # the names of the line before, when it was laid out
    for line_no, data in lines:
        record = decode_grad_stats(data, layout)
        if record is None:
            continue
        if not names and type(record.layer_norms) is dict and record.layer_norms:  # names the layout did not have
            layout = _laid_out(tuple(record.layer_norms))
            record = (layout is not None and _typed(layout, data)) or record
        typed.append(line_no)
        records.append(record)
    columns = list(zip(*map(astuple, records), strict=True)) or [()] * len(_AT)  # field by field
    norms = columns[_AT["layer_norms"]]
    if names:  # dicts, each in its line's order
        counts = np.fromiter(map(len, norms), np.int64, len(norms))
        values = np.fromiter(chain.from_iterable(map(dict.values, norms)), np.float64, int(counts.sum()))
    else:
        laid_out = [norm.values() if type(norm) is dict else astuple(norm) for norm in norms]
        counts = np.fromiter(map(len, laid_out), np.int64, len(norms))
        values = np.fromiter(chain.from_iterable(laid_out), np.float64, int(counts.sum()))
    key_sets: list[list[str]] = []
    key_starts: list[int] = []
    if names:
        last: tuple[str, ...] | None = None
        for index, keys in enumerate(map(tuple, norms)):
            if keys != last:
                last = keys
                key_sets.append(list(keys))
                key_starts.append(index)
    return DecodedGrad(
        typed, {name: columns[_AT[name]] for name in fields}, memoryview(counts), memoryview(values),
        list(map(len, columns[_AT["nonfinite_layers"]])), key_sets, key_starts,
    )  # fmt: skip


class UnsupportedInput(Exception):
    """The typed decoder took a line that :func:`moola_watch.schema.decode_record` rejects: the fast path cannot
    promise the streaming reader's answer for this file."""


class GradBatch:
    """Typed ``grad_stats`` records of one chunk (in file order) as columns, with their lines: each scalar field a
    tuple, every layer norm in one float64 array (record after record), and the rules' :class:`GradColumns`."""

    def __init__(self, decoded: DecodedGrad, lines: list[Line]) -> None:
        self.lines = lines
        self.fields = decoded.fields
        self.counts = counts = np.frombuffer(decoded.counts, np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        self.values = np.frombuffer(decoded.values, np.float64)
        self.key_sets = [tuple(keys) for keys in decoded.key_sets]
        self.key_starts = decoded.key_starts
        self.columns = GradColumns.from_norms(
            self.values, counts, decoded.listed, self.fields["nonfinite_count"], self.fields["mean_norm"]
        )

    def __len__(self) -> int:
        return len(self.lines)

    def quiet(self, thresholds: Thresholds) -> np.ndarray | None:
        """Per record, whether no rule can find its condition there under ``thresholds`` (None: unknown)."""
        return quiet_grad_stats(self.columns, thresholds)

    def runs(self) -> int:
        """How many run ids the records name (one, nearly always)."""
        return len(set(self.fields["run"]))

    def record(self, index: int) -> schema.Record:
        """Record ``index`` as the streaming reader decodes it (a dict)."""
        line_no, data = self.lines[index]
        result = schema.decode_record(data)
        if isinstance(result, schema.Rejected):
            raise UnsupportedInput(f"line {line_no}: {result.reason}")
        return result

    def quiet_run(self, run: str, start: int, stop: int) -> QuietGradStats:
        """Records ``start`` to ``stop`` (all of run ``run``, all quiet) for the engine."""
        f = self.fields
        return QuietGradStats(
            run, f["step"][start:stop], f["epoch"][start:stop], f["time"][start:stop], f["mean_norm"][start:stop],
            f["max_norm"][start:stop], lambda index: self.record(start + index),
        )  # fmt: skip

    def rows(
        self, start: int, stop: int
    ) -> tuple[dict[str, Sequence[Any]], list[tuple[tuple[str, ...], int]], np.ndarray, np.ndarray]:
        """Records ``start`` to ``stop`` for the frames: the scalar columns; the layer names as runs of records that
        share them (names, how many records); each record's number of layers; all their norms."""
        first = bisect_right(self.key_starts, start) - 1  # the key set record start has
        bounds = [start, *self.key_starts[first + 1 :], stop]
        spans = zip(self.key_sets[first:], pairwise(bounds), strict=True)
        runs = [(keys, min(b, stop) - a) for keys, (a, b) in spans if a < stop]
        values = self.values[self.offsets[start] : self.offsets[stop]]
        fields = {name: column[start:stop] for name, column in self.fields.items()}
        return fields, runs, self.counts[start:stop], values
