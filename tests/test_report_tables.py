"""The tables of ``moola-watch analyze`` (:mod:`moola_watch.report`): they fit the console without cutting a
number, and runs are shown by what tells them apart."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from logs import LogBuilder
from rich.console import Console
from rich.text import Text

from moola_watch import analyze
from moola_watch.dotted_name import DottedName
from moola_watch.fitted_table import Choice, Column, FittedTable
from moola_watch.render import number, run_labels
from moola_watch.report import LAYER_FLOOR, TOP_LAYERS, layers_table

numbers = st.floats(allow_nan=True, allow_infinity=True).map(number)
words = st.text(alphabet="abcdefghij_.", min_size=1, max_size=24)


def rendered(table: FittedTable | Choice, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(table)
    return console.export_text()


@st.composite
def tables(draw: st.DrawFn) -> FittedTable:
    rows = draw(st.integers(1, 5))
    columns = []
    for index in range(draw(st.integers(1, 9))):
        if draw(st.booleans()):
            cells = [draw(numbers) for _ in range(rows)]
            columns.append(Column(f"n{index}", cells, number=True, drop=draw(st.integers(0, 2)), justify="right"))
        else:
            cells = [" ".join(draw(st.lists(words, min_size=1, max_size=6))) for _ in range(rows)]
            columns.append(Column(f"t{index}", cells, drop=draw(st.integers(0, 2))))
    return FittedTable("T", columns)


@settings(max_examples=300, deadline=None)
@given(tables(), st.integers(30, 200))
def test_a_table_that_fits_shows_every_number_and_word_whole(table: FittedTable, width: int) -> None:
    """Where the table says it fits, every number of a kept column is on one line, whole, and so is every word
    of a text column no longer than the least width it keeps; the columns left out are named under it."""
    out = rendered(table, width)
    assert max(map(len, out.splitlines())) <= width
    if not table.fits(width):
        return
    kept, dropped = table.fit(width)
    tokens = set(re.split(r"[\s│┃]+", out))
    for column in kept:
        for cell in column.cells:
            for word in str(cell).split():
                if column.number or len(word) <= column.least():
                    assert word in tokens, (column.header, word, out)
    if dropped:
        assert f"(not shown at {width} columns: {', '.join(c.header for c in dropped)})" in " ".join(out.split())


names = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123", min_size=1, max_size=30), min_size=1, max_size=9
).map(".".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=4), st.integers(40, 120))
def test_a_long_layer_name_breaks_after_its_dots_not_inside_a_part(layers: list[str], width: int) -> None:
    """A big model's names are wider than the column at 80 columns: each line of a name holds whole parts, so
    ``LayerNorm`` is never ``La`` / ``yerNorm``; only a part wider than the column itself folds. Read back, the
    lines make the name."""
    columns = [Column("layer", [DottedName(Text(name)) for name in layers], floor=16),
               Column("peak", ["1.234e-05"] * len(layers), number=True, justify="right")]  # fmt: skip
    out = rendered(FittedTable("Worst layers", columns), width)
    assert max(map(len, out.splitlines())) <= width
    rows: list[list[str]] = []  # each name's lines: a row starts where its number is
    for line in out.splitlines():
        if line.startswith("│"):
            _, name, peak, _ = line.split("│")
            rows.append([]) if peak.strip() else None
            rows[-1].append(name.strip())
    assert ["".join(lines) for lines in rows] == layers
    column = max(len(line) for lines in rows for line in lines)
    for name, lines in zip(layers, rows, strict=True):
        part_starts = {match.start() for match in re.finditer(r"[^.]*\.|[^.]+", name)}
        line_starts = [sum(map(len, lines[:at])) for at in range(len(lines))]
        if all(len(part) <= column for part in re.findall(r"[^.]*\.|[^.]+", name)):
            assert set(line_starts) <= part_starts, (name, lines)


BERT = [f"bert.encoder.layer.{i}.attention.output.{kind}" for i in range(12) for kind in ("dense.w", "LayerNorm.b")]


@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nonfinite"])
def test_worst_layers_keep_their_names_at_every_width_from_40_columns(tmp_path: Path, nonfinite: bool) -> None:
    """A big model's layer names in ``analyze``'s Worst layers at 40 to 80 columns: the layer column keeps its
    floor, no line is wider than the console and no number is cut; last goes first (then, with non-finite layers,
    the peak and lowest stack), and the caption names what is not shown. Before, the layer column shrank to 0 or
    1 cells under 60 columns (under 78 with a nan/inf column) and whole number columns went unnamed."""
    log = LogBuilder().start()
    for epoch in range(1, 4):
        norms = {name: 10.0 ** (index % 9 - 6) * epoch for index, name in enumerate(BERT)}
        if nonfinite and epoch == 3:
            norms[BERT[0]] = float("inf")
        log.grad(epoch, 0.3, max(norms.values()), norms)
    scan = analyze.scan_log(log.write(tmp_path / "bert.jsonl"), frames=True)
    layers = analyze.to_frames(scan)["layers"]
    table = layers_table(layers, scan.thresholds)
    worst = pd.concat(analyze.worst_layers(layers, TOP_LAYERS, scan.thresholds))
    numbers = {number(value) for value in [*worst["peak"], *worst["lowest"]]}
    for width in range(40, 81):
        out = rendered(table, width)
        lines = out.splitlines()
        assert max(map(len, lines)) <= width, (width, out)
        borders = lines[1].strip("┏┓").split("┳")
        assert len(borders[1]) - 2 >= LAYER_FLOOR, (width, out)  # the layer column, padding aside
        assert numbers <= set(re.split(r"[\s│┃]+", out)), (width, out)  # every peak and lowest, whole
        if "last" not in "".join(lines[2:4]):
            assert f"(not shown at {width} columns: last" in " ".join(out.split()), (width, out)


@settings(max_examples=300, deadline=None)
@given(names, st.integers(3, 40))
def test_a_folded_parts_last_dot_never_stands_alone_on_a_line(name: str, width: int) -> None:
    """A part one cell wider than the column left its dot alone on a line (``attention`` / ``.`` /
    ``LayerNorm``): the dot leads the next part instead. The lines still make the name and fit the column."""
    lines = DottedName(Text(name)).lines(width)
    assert "".join(lines) == name and max(map(len, lines)) <= width and "." not in lines, lines


def test_a_name_whose_part_is_one_cell_too_wide_folds_without_a_line_for_its_dot() -> None:
    assert DottedName(Text("attention.LayerNorm.weight")).lines(9) == ["attention", ".LayerNor", "m.weight"]
    assert DottedName(Text("attention.LayerNorm.weight")).lines(10) == ["attention.", "LayerNorm.", "weight"]


def test_a_number_column_goes_before_a_number_is_cut() -> None:
    columns = [
        Column("step", ["123456"], number=True, justify="right"),
        Column("cosine", ["-0.12345"], number=True, drop=1, justify="right"),
        Column("ratio", ["1.234e+05"], number=True, justify="right"),
        Column("status", ["Significant imbalance"]),
    ]
    table = FittedTable("Balance", columns)
    wide, narrow = rendered(table, 80), rendered(table, 42)
    assert "-0.12345" in wide and "not shown" not in wide
    assert "-0.12345" not in narrow and "1.234e+05" in narrow and "123456" in narrow
    assert "(not shown at 42 columns: cosine)" in narrow


def test_alerts_stack_their_facts_where_the_message_would_get_too_little_room() -> None:
    message = Column("message", ["TASK COLLAPSE: Pointer task dominating (ratio=19.06 > 5.0) over 10 samples"],
                     floor=30)  # fmt: skip
    wide = FittedTable("Alerts", [Column("run", ["…101332-9713"]), Column("state", ["firing"], number=True),
                                  Column("since", ["epoch 10"], number=True), message])  # fmt: skip
    narrow = FittedTable("Alerts", [Column("run", ["…101332-9713"]), Column("alert", ["firing since epoch 10"]),
                                    message])  # fmt: skip
    choice = Choice([wide, narrow])
    assert choice.chosen(120) is wide and choice.chosen(60) is narrow
    assert "ratio=19.06" in rendered(choice, 60)


def test_run_labels_keep_what_tells_runs_apart() -> None:
    long = ["enhanced_simple_lstm-20261130-101332-9713", "enhanced_simple_lstm-20261130-101327-9710"]
    assert list(run_labels(long).values()) == ["…101332-9713", "…101327-9710"]
    assert run_labels(["first-run", "second-run"]) == {"first-run": "first-run", "second-run": "second-run"}
    assert run_labels([long[0]]) == {long[0]: long[0]}  # one run: no run column, its id in full above
    restarted = ["a-very-long-run-name-of-a-job", "a-very-long-run-name-of-a-job#2"]
    assert list(run_labels(restarted).values()) == ["…job", "…job#2"]  # every label keeps a tail
    apart_at_start = ["x-0123456789abcdefghij", "y-0123456789abcdefghij"]
    assert run_labels(apart_at_start) == {run: run for run in apart_at_start}  # nothing shared to leave out
