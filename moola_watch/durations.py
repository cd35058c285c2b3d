"""Durations as people read them: ``45 s``, ``3 min 20 s``, ``2 h 05 min``, ``7 d 22 h``."""

from __future__ import annotations

import math


def human_duration(seconds: float) -> str:
    """``seconds`` in the two largest units that matter; under a minute, whole seconds."""
    if not math.isfinite(seconds):
        return f"{seconds} s"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"
