"""A batch of ``grad_stats`` records as numpy columns, or one record summed up: what the gradient rules'
vectorised conditions read.

The offline fast path decodes thousands of records at a time; instead of judging each one, it asks every rule
that judges ``grad_stats`` where in the batch its condition may hold (``Rule.vectorised``) and feeds only those
records through the engine one by one. The monitor asks the same conditions of one record's
:class:`GradSummary`, which it has for free from the statistics it just computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

import numpy as np

from moola_watch import schema


@dataclass(frozen=True)
class GradColumns:
    """Per record of a batch (one entry each): its layer norms summarised, and the scalar fields the rules read.

    ``low``/``high`` are the smallest and largest layer norm ignoring NaN (``inf``/``-inf`` for a record without
    layers or with NaN only); ``nonfinite_layers`` counts the non-finite layer norms; ``listed_nonfinite`` is
    the length of the record's ``nonfinite_layers`` list; ``nonfinite_count`` and ``mean_norm`` are its fields.
    Norms are L2 norms of gradients.
    """

    low: np.ndarray
    high: np.ndarray
    nonfinite_layers: np.ndarray
    listed_nonfinite: np.ndarray
    nonfinite_count: np.ndarray
    mean_norm: np.ndarray

    def __len__(self) -> int:
        return len(self.low)

    @property
    def nonfinite(self) -> np.ndarray:
        """Per record, the non-finite layers the rules count (as :func:`~moola_watch.rules.evidence.nonfinite_count`
        does for one record): the most of the three counts."""
        return np.maximum(np.maximum(self.nonfinite_layers, self.listed_nonfinite), self.nonfinite_count)

    @classmethod
    def from_norms(
        cls,
        values: np.ndarray,
        counts: np.ndarray,
        listed_nonfinite: Sequence[int],
        nonfinite_count: Sequence[int],
        mean_norm: Sequence[float],
    ) -> GradColumns:
        """``values`` holds every record's layer norms one record after another, ``counts`` how many each has."""
        n = len(counts)
        low, high = np.full(n, np.inf), np.full(n, -np.inf)
        bad = np.zeros(n, np.int64)
        has = counts > 0
        if has.any():
            starts = (np.cumsum(counts) - counts)[has]  # empty records own no values: reduce only over the others
            low[has] = np.fmin.reduceat(values, starts)
            high[has] = np.fmax.reduceat(values, starts)
            bad[has] = np.add.reduceat(~np.isfinite(values), starts)
        return cls(
            low, high, bad, np.asarray(listed_nonfinite, np.int64), np.asarray(nonfinite_count, np.int64),
            np.asarray(mean_norm, np.float64),
        )  # fmt: skip

    @classmethod
    def from_records(cls, records: Iterable[schema.Record]) -> GradColumns:
        """The columns of decoded ``grad_stats`` records (for tests, and anyone holding dicts)."""
        items = list(records)
        norms = [record["layer_norms"] for record in items]
        counts = np.fromiter(map(len, norms), np.int64, len(norms))
        values = np.fromiter(chain.from_iterable(map(dict.values, norms)), np.float64, int(counts.sum()))
        return cls.from_norms(
            values, counts, [len(r.get("nonfinite_layers") or ()) for r in items],
            [r["nonfinite_count"] for r in items], [r["mean_norm"] for r in items],
        )  # fmt: skip


class GradSummary(NamedTuple):
    """One ``grad_stats`` record as a row of :class:`GradColumns` holds it: its smallest and largest layer norm
    (ignoring NaN), the non-finite layers the rules count, and its mean norm. Norms are L2 norms of gradients."""

    low: float
    high: float
    nonfinite: int
    mean_norm: float
