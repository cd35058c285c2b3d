"""Every number the rules use, validated, loadable from a config table or a run's ``run_start`` record."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

INTEGER_THRESHOLDS = frozenset({"window", "confirm"})
MAX_SAMPLES = 1_000_000  # window and confirm: more samples than any run measures (and a deque of them fits)
#: Thresholds that must not decrease in this order: a band inside its bounds, a low bound below its high one.
ORDERED = (
    ("collapse_low", "balance_low", "balance_high", "collapse_high"),
    ("vanishing", "exploding"),
    ("norm_low", "norm_large", "norm_exploding"),
    ("healthy_norm_low", "healthy_norm_high"),
)
#: Thresholds that are fractions of a whole (a share of the update, a loss's fall over the window): at most 1.
FRACTIONS = ("starve_share", "starve_drop", "starve_persistence", "noise_persistence", "floor_progress")


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
    # Chosen on the labelled runs' tuning seeds (benchmarks/detection.py --tune, session 20), each rate taken
    # against the task's first epoch's loss (TaskProgress.rate_reference)
    starve_share: float = 0.03  # collapse is an error only if the task's mean share of the update is below ...
    starve_drop: float = 0.03  # ... and its own training loss fell by less than this fraction over the window
    starve_rate: float = 0.5  # ... and that loss is above this fraction of its start (below: it has learned)
    # ... unless it is at its floor: its gradient's window mean cosine between consecutive samples below this
    # (mini-batch noise around a minimum) and its loss at or below floor_rate of its first; also at the end
    starve_persistence: float = 0.5
    floor_rate: float = 0.8
    # ... or its gradient's window mean cosine below noise_persistence (pure noise) and its loss at or below
    # noise_rate of its first: a task whose loss cannot fall far (a regression with a low R^2; 30% flipped labels
    # end near 94% of the first epoch's loss) is at its floor too. noise_rate chosen again in session 22.
    noise_persistence: float = 0.3
    noise_rate: float = 0.95
    # Where the run_start gave a task's training floor (task_floors: its loss at the end of a run on it alone), the
    # floor decides instead: the task is at it once its loss came this fraction of the way to it from its first
    # epoch's loss (TaskProgress.floor_reference)
    floor_progress: float = 0.6
    final_share: float = 0.6  # a completed run ended with a task starved if, over the last window, its mean
    # share of the update was below this fraction of an equal share (1 / tasks), ...
    final_run_share: float = 2.0  # ... over the whole run below this fraction of an equal share (2: hardly a bar), ...
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
        for name in INTEGER_THRESHOLDS:
            if not 1 <= getattr(self, name) <= MAX_SAMPLES:
                raise ValueError(f"threshold {name} must be a whole number from 1 to {MAX_SAMPLES:,}, got "
                                 f"{getattr(self, name)}")  # fmt: skip
        for name in FRACTIONS:
            if getattr(self, name) > 1:
                raise ValueError(f"threshold {name} is a fraction, at most 1 (0.07 for 7%), got {getattr(self, name)}")
        for order in self.disordered():
            values = ", ".join(f"{name} {getattr(self, name):g}" for name in order)
            raise ValueError(f"need {' <= '.join(order)}, got {values}")

    def disordered(self) -> list[tuple[str, ...]]:
        """The groups of :data:`ORDERED` whose values decrease somewhere (a band outside its bounds)."""
        return [order for order in ORDERED if _decreases([getattr(self, name) for name in order])]

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
    win except where overridden; recorded names this watcher does not know are ignored (a newer trainer). A
    recorded value this watcher cannot use gives way alone, and the line names it: one out of range, or the
    recorded ones of a group of :data:`ORDERED` that is out of order (as recorded by an older trainer, which
    checked fewer orders, or beside a flag: ``--balance-high 4`` on a run that recorded ``collapse_high`` 3). The
    run's other recorded values still judge it (its exploding bound of 1000 is not 10 for a display band's sake).
    """
    if overridden >= Thresholds.names():  # every one chosen (moola_watch.load given a Thresholds)
        return chosen, "as given (every threshold; the run's recorded ones not used)"
    if not recorded:
        return chosen, "watcher defaults (the run recorded none)" + _overrides(overridden)
    known = {k: v for k, v in recorded.items() if k in Thresholds.names() and k not in overridden}
    try:
        return Thresholds.from_mapping(known, chosen), "recorded in run_start" + _overrides(overridden)
    except ValueError as exc:
        unusable = str(exc)
    set_aside = _unusable(known, chosen)
    kept = {name: value for name, value in known.items() if name not in set_aside}
    try:
        thresholds = Thresholds.from_mapping(kept, chosen)
    except ValueError:
        return chosen, f"watcher defaults (recorded thresholds unusable: {unusable})" + _overrides(overridden)
    words = "; ".join(f"{name} {known[name]!r}: {why}" for name, why in sorted(set_aside.items()))
    return thresholds, f"recorded in run_start{_overrides(overridden)}; recorded but not used: {words}"


def _unusable(known: Mapping[str, Any], chosen: Thresholds) -> dict[str, str]:
    """The recorded values among ``known`` that cannot judge beside ``chosen``, each with why: each one that fails
    alone (a type, a range), and the recorded ones of each group of :data:`ORDERED` whose values, as recorded or
    else as ``chosen`` (a flag's among them), are out of order."""
    grouped = {name for order in ORDERED for name in order}
    why: dict[str, str] = {}
    for name, value in known.items():
        if name in grouped:  # judged in its group below; alone, only whether it is a number
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                why[name] = "not a finite number >= 0"
            continue
        try:
            Thresholds.from_mapping({name: value}, chosen)
        except ValueError as exc:
            why[name] = str(exc)

    def value(name: str) -> Any:
        return known[name] if name in known and name not in why else getattr(chosen, name)

    for order in ORDERED:
        if _decreases([value(name) for name in order]):
            why.update({name: f"out of order (need {' <= '.join(order)})" for name in order if name in known})
    return why


def _decreases(values: list[float]) -> bool:
    return any(a > b for a, b in itertools.pairwise(values))


def _overrides(overridden: frozenset[str]) -> str:
    return f", except {', '.join(sorted(overridden))} (set by a flag or --config)" if overridden else ""
