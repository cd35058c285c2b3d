"""A Rich table that fits the width it is printed at without cutting a number: its columns keep what they must
(a number column all of itself, a text column its longest word), text folds, long headers break, and the columns
marked droppable go, named in the caption. :class:`Choice` picks the first of several layouts that fits. Pure
rendering, used by ``analyze``'s tables (:mod:`moola_watch.report`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from moola_watch.dotted_name import DottedName


def _plain(cell: RenderableType) -> str:
    return cell.plain if isinstance(cell, Text | DottedName) else str(cell)


def cell_width(cell: RenderableType) -> int:
    """The widest line of a cell."""
    return max((cell_len(line) for line in _plain(cell).split("\n")), default=0)


def _longest_word(cells: Iterable[RenderableType]) -> int:
    plain = " ".join(map(_plain, cells))
    return max((cell_len(word) for word in plain.split()), default=0)


@dataclass
class Column:
    """One column of a :class:`FittedTable`. A column of ``number`` cells (or of any cell that must not be cut:
    a position, a state) is as wide as its widest cell. Text folds, keeping at least ``floor`` cells (default:
    its longest word, so that a number in it is never broken), or its natural width if less. ``drop`` > 0:
    left out when the table does not fit, the highest first."""

    header: str  # shown as it is, never as markup
    cells: list[RenderableType]
    number: bool = False
    drop: int = 0
    justify: JustifyMethod = "left"
    style: str = ""
    floor: int | None = None
    narrow_header: str | None = None  # the header where the table is short of room ("window\nmean")
    narrow_cells: list[RenderableType] | None = None  # the cells there (each number on a line of its own)

    def natural(self) -> int:
        return max([cell_width(Text(self.header)), *map(cell_width, self.cells)])

    def least(self) -> int:
        """The width it must keep: a number column all of it, a text column its floor (at most its natural)."""
        if self.number:
            return self.natural()
        return min(self.natural(), _longest_word(self.cells) if self.floor is None else self.floor)

    def narrowed(self) -> Column:
        """The column as it is where the table is short of room."""
        return replace(
            self,
            header=self.header if self.narrow_header is None else self.narrow_header,
            cells=self.cells if self.narrow_cells is None else self.narrow_cells,
            narrow_header=None,
            narrow_cells=None,
        )


@dataclass
class FittedTable:
    """A table that fits the width it is printed at: each column keeps :meth:`Column.least` cells, as Rich lays
    it out (the widest text columns give way first, down to a common width). Where that does not fit, long
    headers break (``narrow_header``), then droppable columns go, and the caption says so. Rows in
    ``sections`` end a section (a rule under them). ``left_out``: the headers of columns this layout never has
    (a narrower one of a :class:`Choice` than the wide one that has them), named in the caption with those that
    go."""

    title: str
    columns: list[Column]
    caption: list[Text] = field(default_factory=list)
    sections: set[int] = field(default_factory=set)
    show_header: bool = True
    left_out: tuple[str, ...] = ()

    @staticmethod
    def fits_with(kept: Sequence[Column], width: int) -> bool:
        """Whether ``kept`` fit ``width``: borders and padding take 3 cells a column and 1 more; numbers their
        natural width; Rich narrows the widest text columns to a common level, which must leave each text column
        its least width."""
        texts = [column for column in kept if not column.number]
        room = width - 3 * len(kept) - 1 - sum(column.natural() for column in kept if column.number)
        naturals = [column.natural() for column in texts]
        if room < 0 or sum(naturals) <= room:
            return room >= 0
        level = 0  # the widest common level at which the text columns fit the room
        while sum(min(natural, level + 1) for natural in naturals) <= room:
            level += 1
        return all(min(natural, level) >= column.least() for natural, column in zip(naturals, texts, strict=True))

    def fit(self, width: int) -> tuple[list[Column], list[Column]]:
        """(the columns kept, the columns left out) at ``width``: all, else all under their narrow headers,
        else without the droppable ones, the highest ``drop`` first."""
        kept = list(self.columns)
        if self.fits_with(kept, width):
            return kept, []
        kept = [column.narrowed() for column in kept]
        dropped: list[Column] = []
        for level in sorted({c.drop for c in self.columns if c.drop}, reverse=True):
            if self.fits_with(kept, width) or all(c.drop == level for c in kept):  # (never every column)
                break
            dropped += [c for c in kept if c.drop == level]
            kept = [c for c in kept if c.drop != level]
        return kept, dropped

    def fits(self, width: int) -> bool:
        return self.fits_with(self.fit(width)[0], width)

    def table(self, width: int) -> Table:
        kept, dropped = self.fit(width)
        table = Table(
            title=Text(self.title),
            title_justify="left",
            expand=True,
            caption_justify="left",
            show_header=self.show_header,
        )
        for column in kept:
            if column.number:
                table.add_column(
                    Text(column.header),
                    justify=column.justify,
                    no_wrap=True,
                    min_width=column.natural(),
                    style=column.style,
                )
            else:
                table.add_column(Text(column.header), justify=column.justify, overflow="fold", style=column.style)
        rows = len(self.columns[0].cells) if self.columns else 0
        for index in range(rows):
            table.add_row(*(column.cells[index] for column in kept), end_section=index in self.sections)
        caption = list(self.caption)
        if dropped or self.left_out:
            names = ", ".join([*self.left_out, *(column.header.replace("\n", " ") for column in dropped)])
            caption.append(Text(f"(not shown at {width} columns: {names})", style="dim"))
        if caption:
            table.caption = Text("\n").join(caption)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(options.max_width))


@dataclass
class Choice:
    """The first of ``layouts`` that fits the width it is printed at (the last if none does)."""

    layouts: list[FittedTable]

    def chosen(self, width: int) -> FittedTable:
        return next((layout for layout in self.layouts if layout.fits(width)), self.layouts[-1])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.chosen(options.max_width).table(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.chosen(options.max_width))
