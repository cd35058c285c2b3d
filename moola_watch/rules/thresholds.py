"""Every number the rules use, validated, loadable from a config table or a run's ``run_start`` record."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

INTEGER_THRESHOLDS = frozenset({"window", "confirm"})


@dataclass(frozen=True)
class Thresholds:
    """Every number the rules use. Norms are L2 norms of gradients; ratios are pointer/type (or, for other
    task sets, the largest task's weighted gradient norm over a task's own)."""

    vanishing: float = 1e-7  # a layer's gradient norm below this is vanishing
    exploding: float = 10.0  # a layer's gradient norm above this is exploding
    balance_low: float = 0.5  # healthy band of the pointer/type gradient ratio ...
    balance_high: float = 2.0  # ... inclusive at both ends
    significant: float = 3.0  # ratio (or 1/ratio) above this: significant rather than minor imbalance
    collapse_high: float = 5.0  # window mean above this: pointer task dominating
    collapse_low: float = 0.2  # window mean below this: type task dominating
    window: int = 10  # balance samples in the sliding collapse window
    starve_share: float = 0.1  # collapse is an error only if the task's mean share of the update is below ...
    starve_drop: float = 0.05  # ... and its own training loss fell by less than this fraction over the window
    starve_rate: float = 0.5  # ... and that loss is above this fraction of its first (below: it has learned)
    final_share: float = 0.4  # a completed run ended with a task starved if, over the last window, its mean
    # share of the update was below this fraction of an equal share (1 / tasks), ...
    final_run_share: float = 0.8  # ... over the whole run below this fraction of an equal share, ...
    final_rate: float = 0.6  # ... and its training loss is still above this fraction of its first
    norm_low: float = 0.01  # mean layer norm below this: vanishing overall
    norm_large: float = 1.0  # mean layer norm above this: large
    norm_exploding: float = 5.0  # mean layer norm above this: exploding overall
    healthy_norm_low: float = 0.1  # the healthy band of the mean layer norm, for display
    healthy_norm_high: float = 0.5
    stale_seconds: float = 300.0  # no record for this long while the run has not ended: stale
    confirm: int = 2  # consecutive samples before a confirmed rule fires

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"threshold {item.name} must be a finite number >= 0, got {value}")
        if self.window < 1 or self.confirm < 1:
            raise ValueError("window and confirm must be at least 1")
        if not self.collapse_low <= self.balance_low <= self.balance_high <= self.collapse_high:
            raise ValueError("need collapse_low <= balance_low <= balance_high <= collapse_high")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(item.name for item in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Thresholds | None = None) -> Thresholds:
        """``base`` (default: the defaults) with ``values`` (a config file, a ``run_start`` record) applied;
        unknown keys are an error."""
        unknown = sorted(set(values) - cls.names())
        if unknown:
            raise ValueError(f"unknown threshold(s): {', '.join(unknown)}")
        converted: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"threshold {name} must be a number, got {value!r}")
            if name in INTEGER_THRESHOLDS and not float(value).is_integer():
                raise ValueError(f"threshold {name} must be a whole number, got {value!r}")
            converted[name] = int(value) if name in INTEGER_THRESHOLDS else float(value)
        return replace(base or cls(), **converted)


def run_thresholds(
    recorded: Mapping[str, Any] | None, chosen: Thresholds, overridden: frozenset[str]
) -> tuple[Thresholds, str]:
    """The thresholds a run is judged by, and a line saying where they came from.

    ``recorded`` is the ``thresholds`` object of the run's ``run_start`` (None if it has none); ``chosen`` are
    the watcher's (defaults, config, flags) and ``overridden`` the names a config or flag set. Recorded values
    win except where overridden; recorded names this watcher does not know are ignored (a newer trainer), and
    an unusable recorded set falls back to the watcher's with the reason.
    """
    if overridden >= Thresholds.names():  # every one chosen (moola_watch.load given a Thresholds)
        return chosen, "as given (every threshold; the run's recorded ones not used)"
    if not recorded:
        return chosen, "watcher defaults (the run recorded none)" + _overrides(overridden)
    known = {k: v for k, v in recorded.items() if k in Thresholds.names() and k not in overridden}
    try:
        return Thresholds.from_mapping(known, chosen), "recorded in run_start" + _overrides(overridden)
    except ValueError as exc:
        return chosen, f"watcher defaults (recorded thresholds unusable: {exc})" + _overrides(overridden)


def _overrides(overridden: frozenset[str]) -> str:
    return f", except {', '.join(sorted(overridden))} (set by a flag or --config)" if overridden else ""
