"""moola-watch: follow, judge and summarise moola's JSONL gradient logs. Never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from moola_watch.rules import Thresholds

__version__ = "0.1.0"
__all__ = ["NotALogError", "__version__", "load"]


def load(
    path: str | Path,
    thresholds: Thresholds | Mapping[str, float] | None = None,
    *,
    task_floors: Mapping[str, float] | None = None,
) -> dict[str, pd.DataFrame]:
    """A log's DataFrames, or a directory's (every log there, its rotated parts as one): see
    :func:`moola_watch.loader.load`.

    Imported on use, so that ``import moola_watch`` (the trainer does) stays free of pandas.
    """
    from moola_watch.loader import load as load_tables

    return load_tables(path, thresholds, task_floors=task_floors)


def __getattr__(name: str) -> object:
    """``moola_watch.NotALogError`` (what :func:`load` raises for a file that is not a log), imported on use too."""
    if name == "NotALogError":
        from moola_watch.loader import NotALogError

        return NotALogError
    raise AttributeError(f"module 'moola_watch' has no attribute {name!r}")
