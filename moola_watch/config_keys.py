"""A config table's keys, spelled as its fields or as their flags (``notify-on``, ``collapse-high``): one reading of
them for every table. Pure: raises ``ValueError``; the command line says which file."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def field_spelled(table: Mapping[str, Any], valid: Collection[str], what: str, *, kind: str = "key(s)",
                  hint: str = "", as_flags: bool = False) -> dict[str, Any]:  # fmt: skip
    """``table`` (the config's ``[what]``) with its keys in field spelling (``notify-on`` is ``notify_on``).
    Raises ``ValueError`` on a key set in both spellings, and on keys not in ``valid`` (named as ``kind``, with
    ``hint`` after them), listing the valid ones (``as_flags``: spelled as their flags)."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in values:
            raise ValueError(f"[{what}] sets {name} twice (as {name} and {name.replace('_', '-')})")
        values[name] = value
    unknown = sorted(key for key in table if key.replace("-", "_") not in valid)
    if unknown:
        raise ValueError(f"[{what}] has unknown {kind}: {', '.join(unknown)}{hint}; valid keys of [{what}]: "
                         f"{', '.join(name.replace('_', '-') if as_flags else name for name in valid)}")  # fmt: skip
    return values
