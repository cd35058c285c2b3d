"""The frames ``analyze`` builds (:class:`moola_watch.frames.FrameColumns`) against the plainest way pandas makes
them from the records' rows: the same dtypes, column order and values, whatever mix of types the records hold.

``tests/test_columnar.py`` checks that the fast path and the streaming engine build the same frames; both go
through ``FrameColumns``, so this is what pins that frames are what pandas itself would make of the rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moola_watch.frames import Column, FrameColumns, table
from moola_watch.schema import make_record

scalars = st.one_of(
    st.floats(), st.integers(-(2**63), 2**63 - 1), st.integers(2**63, 2**64), st.sampled_from([None, True, "x"])
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(scalars, max_size=6), max_size=6), st.data())
def test_a_column_is_what_pandas_makes_of_its_values(batches: list[list[object]], data: st.DataObject) -> None:
    column = Column()
    column.BLOCK = 4  # several blocks, of different kinds
    for batch in batches:
        if data.draw(st.booleans()):
            column.extend(batch)
        else:
            for value in batch:
                column.append(value)
    values = [value for batch in batches for value in batch]
    pd.testing.assert_frame_equal(pd.DataFrame({"c": column.values()}), pd.DataFrame({"c": values}), check_exact=True)


def grad_record(run: str, step: int | None, names: list[str], time: float | int) -> dict:
    norms = {name: 0.1 * (index + 1) for index, name in enumerate(names)}
    return make_record(
        "grad_stats", run, time, epoch=None if step is None else step // 3, step=step, layer_norms=norms,
        total_norm=1.0, mean_norm=0.2, std_norm=0.0, min_norm=0.1, max_norm=0.3, nonfinite_count=0,
    )  # fmt: skip


def reference_frames(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The grad frame from one list per column (a step or an epoch a nullable integer), the layer table from one
    row per layer norm."""
    grad = pd.DataFrame({name: [r.get(name) for r in records] for name in FrameColumns.GRAD})
    grad = grad.astype({"epoch": "Int64", "step": "Int64"})
    rows = [(r["run"], r.get("epoch"), r.get("step"), k, v) for r in records for k, v in r["layer_norms"].items()]
    names = list(dict.fromkeys(row[3] for row in rows))
    layers = pd.DataFrame(
        {
            "run": pd.Categorical([row[0] for row in rows]),
            "epoch": pd.array([row[1] for row in rows], dtype="Int64"),
            "step": pd.array([row[2] for row in rows], dtype="Int64"),
            "layer": pd.Categorical([row[3] for row in rows], categories=names),
            "norm": [float(row[4]) for row in rows] if rows else pd.Series([], dtype="float64"),
        }
    )
    return grad, layers


@pytest.mark.parametrize("layers", [3, 200])  # 200 names: the layer codes take more than one byte
@pytest.mark.parametrize("records", [0, 1, 5000])  # 5000: more than one block per column
@pytest.mark.parametrize("holes", [False, True])  # records without a step or epoch, a time as an int
def test_grad_and_layer_frames_are_what_pandas_makes_of_the_rows(layers: int, records: int, holes: bool) -> None:
    names = [f"l{i}.weight" for i in range(layers)]
    built = [
        grad_record(
            "b" if index % 7 == 0 else "a", None if holes and index % 11 == 0 else index,
            names[: layers - index % 2] if index % 500 < 250 else names[::-1], 10**20 if holes and index == 3 else 1.5,
        )
        for index in range(records)
    ]  # fmt: skip
    columns = FrameColumns()
    for record in built:
        columns.add(record)
    frames = columns.frames()
    grad, layer_table = reference_frames(built)
    pd.testing.assert_frame_equal(frames["grad"], grad, check_exact=True)
    pd.testing.assert_frame_equal(frames["layers"], layer_table, check_exact=True)
    assert not records or math.isclose(frames["layers"]["norm"].iloc[0], 0.1)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["run", "ratio", "time", "norm_a", "scope"]), min_size=1, max_size=4, unique=True),
    st.lists(st.lists(st.one_of(scalars, st.sampled_from([math.nan, -0.0, [1], {"a": 1}])), min_size=4, max_size=4),
             min_size=1, max_size=8),
    st.booleans(),
)  # fmt: skip
def test_a_table_of_rows_with_the_same_keys_is_what_pandas_makes_of_the_rows(
    keys: list[str], values: list[list[object]], reordered: bool
) -> None:
    """Rows of the same keys go to pandas column by column (:func:`moola_watch.frames.table`): the frame pandas makes
    of the rows themselves, whatever the values, and whatever order the later rows hold their keys in (a step or an
    epoch column, nullable integers either way, left out: only integers can be one)."""
    rows = [dict(zip(keys, row, strict=False)) for row in values]
    if reordered:
        rows[1:] = [dict(reversed(row.items())) for row in rows[1:]]
    pd.testing.assert_frame_equal(table(rows, keys), pd.DataFrame(rows), check_exact=True)
