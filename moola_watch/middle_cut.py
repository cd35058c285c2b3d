"""A name as a Rich renderable that, short of room, loses its middle rather than its end: the runs of a sweep
share how their names start (``run-20261130-201416-…``) and differ at the end (a pid, a seed, a rank)."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

ELLIPSIS = "…"


def middle_cut(text: Text, width: int) -> Text:
    """``text`` in at most ``width`` cells: whole if it fits, else its start and its end around ``…``, the end
    given the odd cell (it tells names apart); under 3 cells, its start and ``…``."""
    plain = text.plain
    if cell_len(plain) <= width:
        return text
    if width < 3:
        cut = text.copy()
        cut.truncate(max(width, 0), overflow="ellipsis")
        return cut
    room = width - cell_len(ELLIPSIS)
    head = _chars_within(plain, room // 2)
    tail = _chars_within(plain[::-1], room - cell_len(plain[:head]))
    cut = Text.assemble(text[:head], ELLIPSIS, text[len(plain) - tail :], style=text.style)
    cut.no_wrap = True
    return cut


def _chars_within(plain: str, cells: int) -> int:
    """How many of ``plain``'s first characters fit in ``cells`` cells (a wide character that would not fit
    stays out)."""
    used = 0
    for count, char in enumerate(plain):
        used += cell_len(char)
        if used > cells:
            return count
    return len(plain)


class MiddleCut:
    """:func:`middle_cut` as a table cell: as wide as ``text`` where there is room, down to 3 cells."""

    def __init__(self, text: Text) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield middle_cut(self.text, options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = min(cell_len(self.text.plain), options.max_width)
        return Measurement(min(3, width), width)
