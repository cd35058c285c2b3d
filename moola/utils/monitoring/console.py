"""The monitor's console lines (the spec's ``[PHASE 4]`` wording) go through :mod:`logging`, logger ``moola``.

A library stays quiet: the lines are INFO records that no handler shows until the user asks for them, with
``logging.basicConfig(level=logging.INFO)`` or :func:`console_lines`; warnings (a log that cannot be written, a
measurement that failed) are WARNING records, which Python shows on stderr by default. ``moola train`` turns
the lines on for its own console.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PREFIX = "[PHASE 4]"
LOGGER = logging.getLogger("moola")


class _EchoHandler(logging.Handler):
    def __init__(self, echo: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        self._echo(record.getMessage())


@contextmanager
def console_lines(echo: Callable[[str], None] = print) -> Iterator[None]:
    """While inside, every ``moola`` console line and warning is passed to ``echo`` (default ``print``)."""
    handler = _EchoHandler(echo)
    level, propagate = LOGGER.level, LOGGER.propagate
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # shown once, by us, not again by a root handler
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
        LOGGER.propagate = propagate
