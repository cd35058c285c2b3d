"""Typed decoding of ``grad_stats`` lines (msgspec: parsing and validation in C) and a batch of them as columns.

:class:`GradStats` declares the schema's ``grad_stats`` fields with the types :func:`moola_watch.schema.decode_record`
accepts as they stand; a line it refuses (a non-finite norm written as ``"nan"``, a number as a string, an
integer past 64 bits, a missing field, not JSON at all) is left to ``decode_record``, which names the problem
exactly as the streaming reader does.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from moola_watch import schema
from moola_watch.rules.columns import GradColumns
from moola_watch.rules.engine import quiet_grad_stats
from moola_watch.rules.evidence import QuietGradStats
from moola_watch.rules.thresholds import Thresholds
from moola_watch.tail import Line

# decode_record keeps a JSON integer as an int and converts a 65-bit one to a float: beyond int64, let it decide.
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Number = float | _Int


class GradStats(msgspec.Struct, gc=False):
    """One ``grad_stats`` record, schema 1. A field that may be absent but not null defaults to None (or ())
    without admitting null. Unknown fields are skipped (readers ignore them)."""

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
    amp: dict[str, Any] = None  # type: ignore[assignment]


#: The scalar fields a batch keeps as columns (the grad frame's, which include what the rules' evidence reads).
FIELDS = ("run", "epoch", "step", "time", "total_norm", "mean_norm", "std_norm", "min_norm", "max_norm",
          "nonfinite_count", "cost_ms")  # fmt: skip
_DECODER = msgspec.json.Decoder(GradStats)


def decode_grad_stats(data: bytes) -> GradStats | None:
    """The line as a typed ``grad_stats`` record, or None if it is not one this decoder takes."""
    if b'"grad_stats"' not in data or len(data) > schema.MAX_LINE_BYTES:
        return None
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError:
        return None


class UnsupportedInput(Exception):
    """The typed decoder took a line that :func:`moola_watch.schema.decode_record` rejects: the fast path cannot
    promise the streaming reader's answer for this file."""


class GradBatch:
    """Typed ``grad_stats`` records (in file order) as columns: each scalar field a list, every layer norm in
    one float64 array (record after record), and the rules' :class:`GradColumns`."""

    def __init__(self, records: list[GradStats], lines: list[Line]) -> None:
        self.lines = lines
        self.layer_norms = [record.layer_norms for record in records]
        counts = np.fromiter(map(len, self.layer_norms), np.int64, len(records))
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        self.values = np.fromiter(
            chain.from_iterable(map(dict.values, self.layer_norms)), np.float64, int(self.offsets[-1])
        )
        self.fields = {name: list(map(attrgetter(name), records)) for name in FIELDS}
        listed = list(map(len, map(attrgetter("nonfinite_layers"), records)))
        self.columns = GradColumns.from_norms(
            self.values, counts, listed, self.fields["nonfinite_count"], self.fields["mean_norm"]
        )

    def __len__(self) -> int:
        return len(self.lines)

    def quiet(self, thresholds: Thresholds) -> list[bool] | None:
        """Per record, whether no rule can find its condition there under ``thresholds`` (None: unknown)."""
        quiet = quiet_grad_stats(self.columns, thresholds)
        return None if quiet is None else quiet.tolist()

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

    def rows(self, start: int, stop: int) -> tuple[dict[str, Sequence[Any]], list[dict[str, float]], np.ndarray]:
        """Records ``start`` to ``stop`` for the frames: the scalar columns, the layer norms, their values."""
        values = self.values[self.offsets[start] : self.offsets[stop]]
        return {name: column[start:stop] for name, column in self.fields.items()}, self.layer_norms[start:stop], values
