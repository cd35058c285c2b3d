"""Labelled OHLC windows: seeded synthetic data and loading the user's own arrays.

A window is ``T`` bars of open/high/low/close. Each holds one *expansion* (a strong directional move from
bar ``expansion_start`` to bar ``expansion_end``, inclusive) and a type: after a *consolidation* the
price holds near the expansion's end; after a *retracement* it gives back half or more of the move. Both
the span and the type are visible in the bars, so a model can genuinely learn them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("consolidation", "retracement")
N_FEATURES = 4  # open, high, low, close


class DataError(ValueError):
    """Input arrays that cannot be trained on; the message is one line naming the problem."""


@dataclass(frozen=True)
class WindowDataset:
    """``X``: (N, T, 4) float32 OHLC; ``y``: (N,) int64 class index into ``classes``; pointers: (N,) int64
    bar indices with ``0 <= expansion_start <= expansion_end < T``."""

    X: np.ndarray
    y: np.ndarray
    expansion_start: np.ndarray
    expansion_end: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)


def make_synthetic(n_samples: int = 600, window: int = 48, seed: int = 0) -> WindowDataset:
    """``n_samples`` balanced windows of ``window`` bars, reproducible from ``seed``."""
    if n_samples < 2 or window < 24:
        raise DataError("need at least 2 samples of at least 24 bars")
    rng = np.random.default_rng(seed)
    X = np.empty((n_samples, window, N_FEATURES), dtype=np.float32)
    y = np.arange(n_samples) % len(CLASSES)
    rng.shuffle(y)
    starts = np.empty(n_samples, dtype=np.int64)
    ends = np.empty(n_samples, dtype=np.int64)
    for i in range(n_samples):
        length = int(rng.integers(6, 13))
        start = int(rng.integers(3, window - length - 10))
        end = start + length - 1
        returns = rng.normal(0.0, 0.002, window)  # quiet random walk, log-returns per bar
        direction = rng.choice((-1.0, 1.0))
        returns[start : end + 1] += direction * rng.uniform(0.008, 0.014, length)
        tail = window - end - 1
        if y[i] == 1:  # retracement: give back 50-90% of the move over the rest of the window
            move = returns[start : end + 1].sum()
            returns[end + 1 :] += -move * rng.uniform(0.5, 0.9) / tail
        else:  # consolidation: hold near the top, with a tighter range
            returns[end + 1 :] *= 0.5
        close = rng.uniform(50, 500) * np.exp(np.cumsum(returns))
        open_ = np.concatenate(([close[0] * np.exp(-returns[0])], close[:-1]))
        wick = np.abs(rng.normal(0.0, 0.0015, (2, window))) * close
        X[i, :, 0] = open_
        X[i, :, 1] = np.maximum(open_, close) + wick[0]
        X[i, :, 2] = np.minimum(open_, close) - wick[1]
        X[i, :, 3] = close
        starts[i], ends[i] = start, end
    return WindowDataset(X, y.astype(np.int64), starts, ends, CLASSES)


def validate_arrays(
    X: np.ndarray,
    y: np.ndarray,
    expansion_start: np.ndarray | None = None,
    expansion_end: np.ndarray | None = None,
) -> None:
    """Raise :class:`DataError` (one line) unless the arrays form a trainable dataset."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise DataError(f"X must have shape (samples, bars, features), got shape {X.shape}")
    n, bars, _ = X.shape
    if n < 2 or bars < 2:
        raise DataError(f"X needs at least 2 samples of at least 2 bars, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"X must be numeric, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"X has NaN or infinite values (first at sample {bad[0]}, bar {bad[1]})")
    if len(y) != n:
        raise DataError(f"y has {len(y)} labels for {n} samples")
    if (expansion_start is None) != (expansion_end is None):
        raise DataError("give both expansion_start and expansion_end, or neither")
    if expansion_start is None or expansion_end is None:
        return
    for name, pointer in (("expansion_start", expansion_start), ("expansion_end", expansion_end)):
        pointer = np.asarray(pointer)
        if pointer.shape != (n,):
            raise DataError(f"{name} must have shape ({n},), got {pointer.shape}")
        whole = np.issubdtype(pointer.dtype, np.integer) or (
            np.isfinite(pointer).all() and (pointer == np.round(pointer)).all()
        )
        if not whole:
            raise DataError(f"{name} must hold whole bar indices")
        outside = (pointer < 0) | (pointer >= bars)
        if outside.any():
            i = int(np.argmax(outside))
            raise DataError(f"{name}[{i}] = {pointer[i]} is outside the window (0..{bars - 1})")
    backwards = np.asarray(expansion_start) > np.asarray(expansion_end)
    if backwards.any():
        i = int(np.argmax(backwards))
        raise DataError(f"sample {i}: expansion_start {expansion_start[i]} is after expansion_end {expansion_end[i]}")


def encode_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class indices (int64) and the sorted distinct labels, for labels given as names or integers."""
    values = np.asarray(y)
    if values.ndim != 1:
        raise DataError(f"y must be one label per sample, got shape {values.shape}")
    if values.dtype.kind == "O":
        values = values.astype(str)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DataError("y has NaN or infinite labels")
    classes, indices = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"y needs at least two classes, got {len(classes)}")
    return indices.astype(np.int64).reshape(-1), classes


def load_npz(path: str | Path) -> WindowDataset:
    """Load a user's ``.npz`` holding ``X``, ``y``, ``expansion_start`` and ``expansion_end``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError):
        # numpy's own message talks of allow_pickle, which would send a user towards unsafe loading.
        raise DataError(f"{path}: not an .npz archive of arrays (numpy.savez)") from None
    missing = [k for k in ("X", "y", "expansion_start", "expansion_end") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(sorted(arrays))})")
    try:
        validate_arrays(arrays["X"], arrays["y"], arrays["expansion_start"], arrays["expansion_end"])
        indices, classes = encode_labels(arrays["y"])
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    return WindowDataset(
        arrays["X"].astype(np.float32),
        indices,
        arrays["expansion_start"].astype(np.int64),
        arrays["expansion_end"].astype(np.int64),
        tuple(str(c) for c in classes),
    )
