"""A dotted name as a Rich renderable that breaks after its dots: a big model's layer names in a narrow column."""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text


class DottedName:
    """A dotted name (``enc.encoder.layer.3.output.LayerNorm.bias``) that breaks after its dots where its column
    is narrower than it, so each line holds whole parts (``enc.encoder.layer.3.output.`` / ``LayerNorm.bias``);
    only a part wider than the column folds, and the dot it ends with, if that is all that is left of it, leads
    the next line rather than stand alone (``attention`` / ``.LayerNor`` / ``m.weight`` in 9 cells). Rich text
    breaks at spaces alone, and a name has none."""

    def __init__(self, text: Text) -> None:
        self.text = text
        self.plain = text.plain
        self.parts = re.findall(r"[^.]*\.|[^.]+", self.plain) or [""]  # each part with the dot that ends it

    def lines(self, width: int) -> list[str]:
        """The name in lines of at most ``width`` cells (at least 1)."""
        width = max(1, width)
        lines, line = [], ""
        for part in self.parts:
            lone_dot = line == "." and width > 2  # what a fold left of a part: it goes on with the next one
            if line and not lone_dot and cell_len(line + part) > width:
                lines.append(line)
                line = ""
            while cell_len(line + part) > width:  # a part wider than the column (or than what is left): fold it
                cut = next(at for at in range(len(part), 0, -1) if cell_len(line + part[:at]) <= width or at == 1)
                lines.append(line + part[:cut])
                line, part = "", part[cut:]
            line += part
        return [*lines, line]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("\n".join(self.lines(options.max_width)), style=self.text.style, overflow="fold")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        longest = max(map(cell_len, self.parts))
        return Measurement(min(longest, options.max_width), min(cell_len(self.plain), options.max_width))
