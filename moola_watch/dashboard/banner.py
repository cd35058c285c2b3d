"""A line above the live screen about the watcher itself (its notifications failing), the rest of the screen
left to what it shows."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.text import Text


@dataclass(frozen=True)
class Banner:
    """``text`` (one line, cut to the width) above ``body``, which is given the height less that line: a
    dashboard fitted to the screen still fits."""

    text: Text
    body: RenderableType

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        line = self.text.copy()
        line.no_wrap, line.overflow = True, "ellipsis"
        yield from console.render(line, options)  # one line, its newline included
        rest = options.copy()  # ConsoleOptions.update() cannot set max_height, which a fitted dashboard reads
        rest.max_height = max(1, (options.max_height if options.height is None else options.height) - 1)
        rest.height = None
        yield from console.render(self.body, rest)
