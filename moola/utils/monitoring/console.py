"""The monitor's console lines (the spec's ``[PHASE 4]`` wording) go through :mod:`logging`, logger ``moola``.

A library stays quiet: the lines are INFO records that no handler shows until the user asks for them, with
``logging.basicConfig(level=logging.INFO)`` or :func:`console_lines`; warnings (a log that cannot be written, a
measurement that failed) are WARNING records, which Python shows on stderr by default. ``moola train`` turns
the lines on for its own console.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from moola_watch import rules

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


def stats_block(
    where: str, stats: Mapping[str, Any], norms: Mapping[str, float], overflow: bool, thresholds: rules.Thresholds
) -> str:
    """The spec's gradient-statistics block for one measurement ``where`` (``Epoch 5``, ``Step 120``): the mean
    and max layer norm and how many layers each rule flags (a GradScaler ``overflow`` names the non-finite ones
    as the skipped step they are)."""
    flags = rules.flag_layers(dict(norms), thresholds)
    lines = [
        f"{where} Gradient Stats:",
        f"  Mean norm: {stats['mean_norm']:.4f}",
        f"  Max norm:  {stats['max_norm']:.4f}",
    ]
    nonfinite_label = "AMP: GradScaler overflow (step skipped)" if overflow else "CRITICAL: Non-finite gradients"
    for label, layers in (
        ("WARNING: Vanishing gradients", flags.vanishing),
        ("WARNING: Exploding gradients", flags.exploding),
        (nonfinite_label, flags.nonfinite),
    ):
        if layers:
            lines.append(f"  {label} in {len(layers)} layers")
    return "\n" + "\n".join(lines)
