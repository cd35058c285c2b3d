"""Downsampling for drawing: a 100k-step log becomes a few thousand points per line without losing a spike.

Only what is drawn is thinned; verdicts and alerts come from every record (the rules saw them all).
"""

from __future__ import annotations

import itertools

import numpy as np

MAX_POINTS = 2000  # points drawn per line


def keep_extremes(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices (sorted) to draw of ``values``: all of them if few; else, per bucket, the first, the lowest,
    the highest and the last point, so peaks, dips and non-finite values survive thinning."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 4)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    finite = np.where(np.isfinite(values), values, np.nan)
    keep: list[int] = []
    for start, stop in itertools.pairwise(edges):
        if stop <= start:
            continue
        chunk = finite[start:stop]
        keep += [start, stop - 1]
        if not np.isnan(chunk).all():
            keep += [start + int(np.nanargmin(chunk)), start + int(np.nanargmax(chunk))]
        bad = np.flatnonzero(~np.isfinite(values[start:stop]))
        if bad.size:
            keep.append(start + int(bad[0]))
    return np.unique(np.asarray(keep, dtype=np.int64))


def time_bins(x: np.ndarray, max_bins: int) -> np.ndarray:
    """A bin number for each of the (sorted) positions ``x``: every distinct position its own bin if there are
    at most ``max_bins`` of them, else evenly spaced bins over the positions' range."""
    distinct = np.unique(x)
    if len(distinct) <= max_bins:
        return np.searchsorted(distinct, x)
    lo, hi = float(distinct[0]), float(distinct[-1])
    return np.minimum(((x - lo) / (hi - lo) * max_bins).astype(np.int64), max_bins - 1)
