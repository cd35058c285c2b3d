"""The DataFrames ``analyze`` makes of a log, collected as the records go by: each ``grad_stats`` field a column
made typed while fresh, the long table of layer norms built at the end, balance and epoch records as rows.
Pure: records in, frames out. pandas is imported only when the frames are made (collecting needs numpy alone)."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from moola_watch import rules, schema

if TYPE_CHECKING:
    import pandas as pd


class Column:
    """One frame column collected in blocks of ``BLOCK`` values, each kept as an array where pandas would make one.

    pandas infers one dtype from a whole list of Python values, touching every value object once more at the
    end, long after it was decoded. A block whose values are all ``float`` (or all ``int`` within int64) becomes a
    float64 (int64) array while it is fresh in the cache: exactly what pandas makes of such values. When every
    block is an array of one dtype, :meth:`values` joins them; otherwise it hands pandas the Python values, in
    order, as before, to infer the dtype the whole column asks for.
    """

    BLOCK = 1024  # values: a block must still be in the cache when it is sealed (4096: 0.09 s, 1024: 0.057 s)

    def __init__(self) -> None:
        self._blocks: list[np.ndarray | list[Any]] = []
        self._pending: list[Any] = []

    def append(self, value: Any) -> None:
        self._pending.append(value)
        if len(self._pending) >= self.BLOCK:
            self._seal()

    def extend(self, values: Iterable[Any]) -> None:
        self._pending.extend(values)
        if len(self._pending) >= self.BLOCK:
            self._seal()

    def _seal(self) -> None:
        if self._pending:
            self._blocks.append(typed_block(self._pending))
            self._pending = []

    def values(self) -> np.ndarray | list[Any]:
        """Every value so far: one array if every block is an array of one dtype, else a list of Python values."""
        self._seal()
        blocks = self._blocks
        if blocks and all(isinstance(b, np.ndarray) and b.dtype == blocks[0].dtype for b in blocks):
            return np.concatenate(blocks)  # type: ignore[arg-type]
        return [value for block in blocks for value in (block.tolist() if isinstance(block, np.ndarray) else block)]


def typed_block(values: list[Any]) -> np.ndarray | list[Any]:
    """``values`` as a float64 or int64 array if all are ``float``, or all ``int`` within int64; else as they are."""
    kinds = set(map(type, values))
    if kinds == {float}:
        return np.array(values, np.float64)
    if kinds == {int}:
        try:
            return np.array(values, np.int64)
        except OverflowError:  # pandas makes uint64 or objects of such a column: let it
            return values
    return values


class FrameColumns:
    """The frames' data per record kind, turned into DataFrames at the end: each ``grad_stats`` field a
    :class:`Column`; ``task_balance`` and ``epoch`` records as row dicts (their per-task columns vary).

    The long table of layer norms is the big one (records x layers rows): per record only its norms are
    appended; run, epoch, step and layer codes are expanded with ``numpy.repeat`` at the end.
    """

    GRAD = ("run", "epoch", "step", "time", "total_norm", "mean_norm", "std_norm", "min_norm", "max_norm",
            "nonfinite_count", "cost_ms")  # fmt: skip
    BALANCE = ("run", "epoch", "step", "time", "ratio", "cosine", "scope")  # then per-task columns
    EPOCH = ("run", "epoch", "step", "time", "train_loss", "val_loss", "lr", "duration_s")  # then losses, metrics

    def __init__(self) -> None:
        self.grad = {name: Column() for name in self.GRAD}
        self.layer_norm = array("d")
        self.layer_counts = array("q")  # layers in each grad_stats record
        self.layer_sets = array("q")  # which distinct key list each record used
        self._key_lists: list[tuple[str, ...]] = []
        self._last_keys: tuple[str, ...] | None = None
        self.balance: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.groups = GroupColumns()

    def add(self, record: schema.Record) -> None:
        kind = record["kind"]
        if kind == schema.GRAD_STATS:
            grad = self.grad
            for name in self.GRAD:
                grad[name].append(record.get(name))
            # Per tensor: a big model's record names its extreme tensors in top_layers (its layer_norms are module
            # groups, each the L2 norm of many tensors, which no per-tensor bound or colour scale fits: those go
            # to their own table).
            if "layer_groups" in record:
                self.groups.add(record)
            norms = rules.judged_layer_norms(record)
            self.layer_sets.append(self._key_set(tuple(norms)))
            self.layer_counts.append(len(norms))
            self.layer_norm.extend(norms.values())
        elif kind == schema.TASK_BALANCE:
            row = {k: record.get(k) for k in self.BALANCE}
            for prefix, values in (
                ("norm", "norms"),
                ("raw_norm", "raw_norms"),
                ("loss", "losses"),
                ("share", "shares"),
                ("weight", "weights"),
                ("cosine", "cosines"),
                ("persistence", "persistence"),
            ):
                for task, value in (record.get(values) or {}).items():
                    row[f"{prefix}_{task}"] = value
            self.balance.append(row)
        elif kind == schema.EPOCH:
            row = {k: record.get(k) for k in self.EPOCH}
            row.update({f"loss_{k}": v for k, v in (record.get("task_losses") or {}).items()})
            row.update(record.get("metrics") or {})
            self.epochs.append(row)

    def add_grad(
        self, fields: Mapping[str, Sequence[Any]], layer_names: Iterable[tuple[tuple[str, ...], int]],
        counts: np.ndarray, values: np.ndarray,
    ) -> None:  # fmt: skip
        """``grad_stats`` records in bulk, as :meth:`add` would take them one by one: ``fields`` maps each grad
        column to its values in record order, ``layer_names`` holds the records' layer names as runs (the names in
        their order, how many consecutive records have them), ``counts`` each record's number of layers, ``values``
        all of their norms in one float64 array, record after record."""
        for name in self.GRAD:
            self.grad[name].extend(fields[name])
        for keys, records in layer_names:
            self.layer_sets.extend(array("q", [self._key_set(keys)]) * records)
        self.layer_counts.frombytes(memoryview(np.ascontiguousarray(counts, np.int64)).cast("B"))
        self.layer_norm.frombytes(memoryview(np.ascontiguousarray(values, np.float64)).cast("B"))

    def _key_set(self, keys: tuple[str, ...]) -> int:
        """Which distinct list of layer names this is (layers rarely change between records)."""
        if keys != self._last_keys:
            self._last_keys = keys
            self._key_lists.append(keys)
        return len(self._key_lists) - 1

    def _layers(self, grad: Mapping[str, np.ndarray | list[Any]]) -> pd.DataFrame:
        """The long table of layer norms; ``grad`` holds the grad frame's column values."""
        import pandas as pd

        names: dict[str, int] = {}
        for keys in self._key_lists:
            for key in keys:
                names.setdefault(key, len(names))
        # The codes in the narrowest type that holds them, as the categorical keeps them: a table of millions of
        # rows is mostly fresh memory, and each byte not written is a page not faulted in.
        code_type = np.min_scalar_type(-len(names) - 1)
        code_lists = [np.array([names[k] for k in keys], dtype=code_type) for keys in self._key_lists]
        counts = np.frombuffer(self.layer_counts, dtype=np.int64) if self.layer_counts else np.zeros(0, np.int64)
        sets = np.frombuffer(self.layer_sets, dtype=np.int64) if self.layer_sets else np.zeros(0, np.int64)
        # Records with the same layers come in long runs: one tile per run, not one array per record.
        bounds = [*np.flatnonzero(np.diff(sets, prepend=-1)).tolist(), len(sets)]
        tiles = [np.tile(code_lists[sets[a]], b - a) for a, b in pairwise(bounds)]
        codes = np.concatenate([np.zeros(0, code_type), *tiles])

        def per_layer(column: str) -> pd.api.extensions.ExtensionArray:
            # Repeat plain int64 and a mask: numpy would turn a repeated nullable array into objects. Without a
            # missing value the mask is zeros, which calloc leaves unwritten.
            values = pd.array(grad[column], dtype="Int64")
            data = values.to_numpy(dtype=np.int64, na_value=0)
            missing = values.isna()
            mask = np.repeat(missing, counts) if missing.any() else np.zeros(len(codes), bool)
            return pd.arrays.IntegerArray(np.repeat(data, counts), mask)

        runs = pd.Categorical(grad["run"])
        return pd.DataFrame(
            {
                "run": pd.Categorical.from_codes(np.repeat(runs.codes, counts), categories=runs.categories),
                "epoch": per_layer("epoch"),
                "step": per_layer("step"),
                "layer": pd.Categorical.from_codes(codes, categories=list(names)),
                "norm": np.frombuffer(self.layer_norm, dtype=np.float64) if self.layer_norm else np.zeros(0),
            },
            copy=False,  # every column is built here, for this frame alone
        )

    def frames(self) -> dict[str, pd.DataFrame]:
        import pandas as pd

        grad: dict[str, Any] = {name: column.values() for name, column in self.grad.items()}
        grad.update({name: pd.array(grad[name], dtype="Int64") for name in ("epoch", "step")})
        return {"grad": pd.DataFrame(grad), "layers": self._layers(grad), **self.measurements()}

    def measurements(self, *, nan_as_text: bool = False) -> dict[str, pd.DataFrame]:
        """The ``balance`` and ``epochs`` tables; ``nan_as_text``: see :func:`table`. Otherwise every column but
        the run and the balance's scope is one of numbers (float64) where its values are numbers or missing: a
        column a log never filled (``val_loss``, the pointer/type ``ratio`` of other tasks) is NaN, not ``None``
        objects that ``describe()`` counts as text."""
        balance = table(self.balance, self.BALANCE, nan_as_text=nan_as_text)
        epochs = table(self.epochs, self.EPOCH, nan_as_text=nan_as_text)
        if nan_as_text:
            return {"balance": balance, "epochs": epochs}
        return {"balance": numbers(balance, text=("run", "scope")), "epochs": numbers(epochs, text=("run",))}


class GroupColumns:
    """A big model's module-group norms, from the ``grad_stats`` records whose ``layer_norms`` are groups (those
    with ``layer_groups``), as a long table (:meth:`frame`): run, epoch, step, group, norm (the group's L2 norm),
    tensors (how many it holds, ``layer_groups["sizes"]``; missing where a record does not say: a log written
    before records did, whose group norms cannot be read per tensor)."""

    COLUMNS = ("run", "epoch", "step", "group", "norm", "tensors")

    def __init__(self) -> None:
        self.records: list[tuple[Any, Any, Any]] = []  # run, epoch, step of each record taken
        self.counts = array("q")  # groups in each record taken
        # int32 codes and sizes: a long run of a big model is thousands of groups a record, millions of rows
        self.codes = array("i")
        self.norms = array("d")
        self.sizes = array("i")  # 0: not said
        self._names: dict[str, int] = {}
        self._last: tuple[tuple[str, ...], array] = ((), array("i"))  # a model's groups rarely change: their codes

    def add(self, record: schema.Record) -> None:
        norms = record["layer_norms"]
        keys = tuple(norms)
        if keys != self._last[0]:
            self._last = (keys, array("i", [self._names.setdefault(key, len(self._names)) for key in keys]))
        self.records.append((record["run"], record.get("epoch"), record.get("step")))
        self.counts.append(len(keys))
        self.codes.extend(self._last[1])
        self.norms.extend(norms.values())
        self.sizes.extend(group_sizes(record) or [0] * len(keys))

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        if not self.records:
            return pd.DataFrame(columns=list(self.COLUMNS))
        per_record = pd.DataFrame(self.records, columns=["run", "epoch", "step"])
        per_record = per_record.astype({"run": "category", "epoch": "Int64", "step": "Int64"})
        rows = np.repeat(np.arange(len(self.records)), np.frombuffer(self.counts, np.int64))
        out = per_record.iloc[rows].reset_index(drop=True)
        out["group"] = pd.Categorical.from_codes(np.frombuffer(self.codes, np.int32), categories=list(self._names))
        out["norm"] = np.frombuffer(self.norms, np.float64)
        sizes = np.frombuffer(self.sizes, np.int32)
        out["tensors"] = pd.arrays.IntegerArray(sizes, sizes == 0)
        return out


def group_sizes(record: schema.Record) -> list[int] | None:
    """How many tensors each of a grouped record's ``layer_norms`` holds, in their order; None where the record
    does not say (a log written before records did) or says something else."""
    groups = record.get("layer_groups")
    sizes = groups.get("sizes") if isinstance(groups, Mapping) else None
    norms = record.get("layer_norms")
    if not isinstance(sizes, list) or not isinstance(norms, Mapping) or len(sizes) != len(norms):
        return None
    return sizes if all(type(size) is int and size > 0 for size in sizes) else None


#: The columns that hold a step or an epoch, in every frame: nullable integers (``Int64``), whether or not a
#: record lacked one (pandas would make floats of whole numbers beside a None, or objects of Nones alone).
POSITION_COLUMNS = ("epoch", "step", "first_epoch", "first_step", "last_step", "resolved_step")


def table(rows: list[dict[str, Any]], columns: Sequence[str], *, nan_as_text: bool = False) -> pd.DataFrame:
    """Rows as a DataFrame; with no rows, still with ``columns`` (an empty table keeps its header). Its step and
    epoch columns (:data:`POSITION_COLUMNS`) are nullable integers. With ``nan_as_text``, a NaN a row holds (a
    loss the record said was NaN) is the text ``nan``, for a person to tell it from a value the row lacks (NaN);
    its column is then one of objects.

    Rows that all have the same keys (a run's records, nearly always) are handed to pandas column by column: the
    same frame as from the rows (pandas orders the columns as the first row does and infers each column's dtype
    from its values either way; ``tests/test_analyze_frames.py`` holds the two to each other), in half the time."""
    import pandas as pd

    if nan_as_text:
        rows = [{key: "nan" if _is_nan(value) else value for key, value in row.items()} for row in rows]
    if not rows:
        frame = pd.DataFrame(columns=list(columns))
    elif all(row.keys() == rows[0].keys() for row in rows):
        frame = pd.DataFrame({key: list(map(itemgetter(key), rows)) for key in rows[0]})
    else:
        frame = pd.DataFrame(rows)
    positions = {name: "Int64" for name in POSITION_COLUMNS if name in frame}
    return frame.astype(positions) if positions else frame


def numbers(frame: pd.DataFrame, text: Sequence[str]) -> pd.DataFrame:
    """``frame`` with each column of objects that hold only numbers and missing values (None) as float64, but
    the ``text`` ones; a column holding anything else (a string, a bool, a list) is left as it is."""
    cast = {
        column: "float64"
        for column in frame.columns
        if column not in text
        and frame[column].dtype == object
        and all(value is None or (type(value) in (int, float)) for value in frame[column])
    }
    return frame.astype(cast) if cast else frame


def nan_text(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with each NaN in ``columns`` (of numbers, every value recorded) as the text ``nan``, as
    :func:`table` writes it ``nan_as_text``; such a column is then one of objects. ``frame`` itself when none
    holds a NaN (the layers table may be millions of rows: no copy of it is made for nothing)."""
    nans = {column: frame[column].isna() for column in columns}
    said = {column: frame[column].astype(object).mask(nan, "nan") for column, nan in nans.items() if nan.any()}
    return frame.assign(**said) if said else frame


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
