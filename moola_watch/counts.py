"""Counts as people read them: ``1 run``, ``2 runs``, ``0 bad lines``."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun singular for exactly one and plural otherwise (``plural``, or the noun
    with an ``s``): ``1 layer``, ``3 layers``, ``0 logs``."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
