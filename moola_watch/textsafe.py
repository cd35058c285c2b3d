"""Making untrusted text from a log inert before it reaches a terminal.

Layer names, run ids and messages come from a file anyone could have written. Control characters
(ESC, CR, BEL, ...), C1 controls and invisible format characters (bidi overrides, zero-width joiners) are
shown as visible escapes, so a log can neither restyle, clear nor retitle the terminal. Rich markup is the
other half: callers wrap this text in ``rich.text.Text`` (never a markup string).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

MAX_SHOWN = 200  # characters of one untrusted value shown before it is cut with an ellipsis


def inert(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as text with every control or invisible format character escaped, cut to ``limit``."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# Characters JSON may carry raw that a terminal would obey or that reorder what it shows: C1 controls (U+009B
# is CSI), bidi overrides and isolates, zero-width and line/paragraph separators, BOM.
_JSON_INVISIBLE = re.compile("[\u0080-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def json_line(obj: Any) -> bytes:
    """``obj`` as one JSON line that is inert on a terminal: orjson escapes C0 controls itself; the invisible
    and C1 characters above become ``\\uXXXX`` escapes, which JSON readers decode to the same text."""
    text = orjson.dumps(obj, default=str).decode("utf-8")
    return _JSON_INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8") + b"\n"
