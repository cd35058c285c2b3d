"""Thresholds, rule evaluation and the alert lifecycle: records in, alert events out.

Pure: no files, no terminal, no clock (the stale rule takes ``now`` as an argument). The trainer's console
lines and summary and the watcher's alerts all come from here, so the two sides cannot disagree.

Alerts follow Prometheus' lifecycle: a condition seen once is *pending*; it *fires* once it has held for
``confirm`` consecutive samples (at once for exploding, non-finite and windowed rules); it is *resolved* when a later
sample no longer shows it. A pending alert whose condition goes away is dropped silently. Alerts are
keyed by (rule, subject), so one condition is one alert however many records show it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

from moola_watch import schema
from moola_watch.durations import human_duration

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
SEVERITY_RANK = {name: rank for rank, name in enumerate(schema.SEVERITIES)}

# Rule names, as they appear in alerts, `check --json` and the dashboard.
VANISHING = "vanishing"
EXPLODING = "exploding"
NONFINITE = "nonfinite"
IMBALANCE = "imbalance"
COLLAPSE = "collapse"
NORM_LEVEL = "norm_level"
STALE = "stale"
RUN_FAILED = "run_failed"
RUN_INTERRUPTED = "run_interrupted"
AMP_OVERFLOW = "amp_overflow"

#: Rules that wait ``confirm`` consecutive samples before firing; the others fire at once.
CONFIRMED_RULES = frozenset({VANISHING, IMBALANCE, NORM_LEVEL, AMP_OVERFLOW})
TASK_PAIR = "pointer/type"


@dataclass(frozen=True)
class Thresholds:
    """Every number the rules use. Norms are L2 norms of gradients; ratios are pointer/type."""

    vanishing: float = 1e-7  # a layer's gradient norm below this is vanishing
    exploding: float = 10.0  # a layer's gradient norm above this is exploding
    balance_low: float = 0.5  # healthy band of the pointer/type gradient ratio ...
    balance_high: float = 2.0  # ... inclusive at both ends
    significant: float = 3.0  # ratio (or 1/ratio) above this: significant rather than minor imbalance
    collapse_high: float = 5.0  # window mean above this: pointer task dominating
    collapse_low: float = 0.2  # window mean below this: type task dominating
    window: int = 10  # balance samples in the sliding collapse window
    norm_low: float = 0.01  # mean layer norm below this: vanishing overall
    norm_large: float = 1.0  # mean layer norm above this: large
    norm_exploding: float = 5.0  # mean layer norm above this: exploding overall
    healthy_norm_low: float = 0.1  # the healthy band of the mean layer norm, for display
    healthy_norm_high: float = 0.5
    stale_seconds: float = 300.0  # no record for this long while the run has not ended: stale
    confirm: int = 2  # consecutive samples before a rule in CONFIRMED_RULES fires

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
    def from_mapping(cls, values: Mapping[str, Any]) -> Thresholds:
        """Thresholds from a mapping (a config file, a ``run_start`` record); unknown keys are an error."""
        known = {item.name: item.type for item in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown threshold(s): {', '.join(unknown)}")
        converted: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"threshold {name} must be a number, got {value!r}")
            converted[name] = int(value) if name in ("window", "confirm") else float(value)
        return replace(cls(), **converted)


# ------------------------------------------------------------------------------ single-sample verdicts


@dataclass(frozen=True)
class LayerFlags:
    """Layers whose gradient norm is non-finite, vanishing or exploding."""

    nonfinite: list[str]
    vanishing: list[str]
    exploding: list[str]


def flag_layers(layer_norms: Mapping[str, float], th: Thresholds) -> LayerFlags:
    """Judge every layer norm. The common all-healthy case is decided by C-level ``sum``/``min``/``max``
    with no per-layer Python work (a model may have thousands of tensors)."""
    values = layer_norms.values()
    if not values or (math.isfinite(sum(values)) and th.vanishing <= min(values) and max(values) <= th.exploding):
        return LayerFlags([], [], [])
    flags = LayerFlags([], [], [])
    for name, norm in layer_norms.items():  # one pass: non-finite first, so NaN/inf land nowhere else
        if not math.isfinite(norm):
            flags.nonfinite.append(name)
        elif norm < th.vanishing:
            flags.vanishing.append(name)
        elif norm > th.exploding:
            flags.exploding.append(name)
    return flags


def vanishing_layers(layer_norms: Mapping[str, float], threshold: float = 1e-7) -> list[str]:
    """Names of layers whose finite gradient norm is below ``threshold``."""
    return flag_layers(layer_norms, Thresholds(vanishing=threshold)).vanishing


def exploding_layers(layer_norms: Mapping[str, float], threshold: float = 10.0) -> list[str]:
    """Names of layers whose finite gradient norm is above ``threshold``."""
    return flag_layers(layer_norms, Thresholds(exploding=threshold)).exploding


@dataclass(frozen=True)
class Verdict:
    """What a value means: a status name, its severity (None when healthy) and what to do."""

    status: str
    severity: str | None
    action: str


def _band(th: Thresholds) -> str:
    return f"{th.balance_low}-{th.balance_high}"


def recommend_ratio(ratio: float, th: Thresholds = Thresholds()) -> Verdict:
    """The spec's ratio -> action table for a pointer/type gradient ratio."""
    if ratio > th.collapse_high:
        return Verdict("Task collapse", "error", "Urgent: increase alpha by 2x or decrease beta by 0.5x")
    if ratio < th.collapse_low:
        return Verdict("Task collapse", "error", "Urgent: decrease alpha by 0.5x or increase beta by 2x")
    if th.balance_low <= ratio <= th.balance_high:
        return Verdict("Healthy", None, "No change needed")
    pointer_side = ratio > th.balance_high
    lean = ratio if pointer_side else 1.0 / ratio
    if lean <= th.significant:
        return Verdict("Minor imbalance", "warning", "Monitor, consider small weight adjustment")
    fix = "increase alpha or decrease beta" if pointer_side else "decrease alpha or increase beta"
    return Verdict("Significant imbalance", "warning", f"Adjust loss weights: {fix}")


def classify_norm_level(mean_norm: float, th: Thresholds = Thresholds()) -> Verdict:
    """The spec's gradient-norm table for the mean of the layer norms."""
    if mean_norm > th.norm_exploding:
        return Verdict("Exploding", "error", "Reduce learning rate")
    if mean_norm > th.norm_large:
        return Verdict("Large", "warning", "Check gradient clipping")
    if mean_norm < th.norm_low:
        return Verdict("Vanishing", "warning", "Increase learning rate")
    if th.healthy_norm_low <= mean_norm <= th.healthy_norm_high:
        return Verdict("Healthy", None, "No change needed")
    return Verdict("Acceptable", None, "No change needed")


def balance_message(ratio: float, epoch: int | None, th: Thresholds = Thresholds()) -> str:
    """The trainer's line(s) for one balance sample, in the spec's wording."""
    if th.balance_low <= ratio <= th.balance_high:
        return f"Task balance: Tasks balanced (ratio={ratio:.2f})"
    where = f" at epoch {epoch}" if epoch is not None else ""
    return f"Task imbalance detected{where}!\nPointer/Type gradient ratio: {ratio:.2f} (healthy range: {_band(th)})"


@dataclass(frozen=True)
class CollapseVerdict:
    """The sliding-window verdict: ``state`` is one of not_enough_data, balanced, imbalanced,
    pointer_dominating, type_dominating; ``mean`` is the window's mean ratio (None without data)."""

    state: str
    mean: float | None
    samples: int
    text: str

    @property
    def collapsed(self) -> bool:
        return self.state in ("pointer_dominating", "type_dominating", "dominated")


def mean_ratio(ratios: Sequence[float]) -> float:
    """Arithmetic mean of (non-NaN) ratios; an infinite ratio (a task with zero gradient) makes it infinite."""
    return math.fsum(ratios) / len(ratios) if all(map(math.isfinite, ratios)) else max(ratios)


def collapse_verdict(ratios: Sequence[float], th: Thresholds = Thresholds()) -> CollapseVerdict:
    """Judge the mean of the last ``th.window`` ratios (NaN ratios are not samples).

    A mean of exactly ``collapse_high`` (or ``collapse_low``) is not collapse: the bounds are strict.
    """
    usable = [ratio for ratio in ratios if not math.isnan(ratio)][-th.window :]
    if len(usable) < th.window:
        return CollapseVerdict("not_enough_data", None, len(usable), "Not enough data")
    mean = mean_ratio(usable)
    if mean > th.collapse_high:
        state, text = "pointer_dominating", f"Pointer task dominating (ratio={mean:.2f} > {th.collapse_high})"
    elif mean < th.collapse_low:
        state, text = "type_dominating", f"Type task dominating (ratio={mean:.2f} < {th.collapse_low})"
    elif th.balance_low <= mean <= th.balance_high:
        state, text = "balanced", f"Tasks balanced (ratio={mean:.2f})"
    else:
        state, text = "imbalanced", f"Tasks imbalanced (ratio={mean:.2f}, healthy range: {_band(th)})"
    return CollapseVerdict(state, mean, len(usable), text)


# ------------------------------------------------------------------------------------ alert lifecycle


@dataclass
class Alert:
    """One condition over its life. ``value`` is the latest measurement that showed it."""

    rule: str
    subject: str
    severity: str
    state: str
    value: float | None
    message: str
    recommendation: str
    first_step: int | None
    first_epoch: int | None
    first_time: float | None
    last_step: int | None = None
    last_epoch: int | None = None
    resolved_step: int | None = None
    resolved_epoch: int | None = None
    samples: int = 1  # consecutive samples that showed the condition
    layers: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AlertEvent:
    """A transition: ``alert`` is a snapshot taken when it entered ``alert.state``."""

    alert: Alert
    escalated: bool = False  # re-announced because its severity rose while firing


class _Where(NamedTuple):  # a NamedTuple: made once per record, and cheaper than a dataclass
    step: int | None
    epoch: int | None
    time: float | None


@dataclass(frozen=True)
class _Observation:
    """A condition as one sample shows it."""

    rule: str
    subject: str
    severity: str
    value: float | None
    message: str
    recommendation: str
    layers: tuple[str, ...] = ()


def position(epoch: int | None, step: int | None) -> str:
    """'epoch 12, step 340', whichever is known, or 'the start' when neither is."""
    parts = [f"epoch {epoch}" if epoch is not None else "", f"step {step}" if step is not None else ""]
    return ", ".join(part for part in parts if part) or "the start"


def _names(layers: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(layers[:limit])
    return shown + (f" (+{len(layers) - limit} more)" if len(layers) > limit else "")


@dataclass
class _Stats:
    """Running mean and population std (Welford) plus a peak."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    peak: float = -math.inf

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.peak = max(self.peak, value)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else math.nan


@dataclass(frozen=True)
class MonitoringSummary:
    """End-of-run summary, the same object for the trainer's console and the watcher."""

    grad_samples: int
    mean_norm: float | None
    mean_norm_std: float | None
    max_norm: float | None
    max_norm_peak: float | None
    nonfinite_samples: int
    amp_overflows: int
    balance_samples: int
    balance: CollapseVerdict
    collapse_first_epoch: int | None  # epoch where a collapse alert first fired, if one ever did
    worst_severity: str | None  # the worst severity any alert reached, None if none fired
    alerts_fired: int

    def lines(self) -> list[str]:
        """The spec's summary block, line by line."""
        out = ["[PHASE 4] Gradient Monitoring Summary:"]
        if self.grad_samples:
            out.append(f"  Mean gradient norm: {self.mean_norm:.4f} ± {self.mean_norm_std:.4f}")
            out.append(f"  Max gradient norm: {self.max_norm:.4f} (peak: {self.max_norm_peak:.4f})")
        else:
            out.append("  Mean gradient norm: n/a (no finite gradient statistics)")
        if self.nonfinite_samples:
            out.append(f"  Non-finite gradients in {self.nonfinite_samples} measurement(s)")
        if self.amp_overflows:
            out.append(f"  GradScaler overflow (step skipped) in {self.amp_overflows} measurement(s)")
        if self.balance.collapsed:
            out.append(f"  TASK COLLAPSE DETECTED: {self.balance.text}")
        else:
            line = f"  Task balance: {self.balance.text}"
            if self.collapse_first_epoch is not None:
                line += f" (task collapse was detected at epoch {self.collapse_first_epoch}, since resolved)"
            out.append(line)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunState:
    """What is known about the run from its records."""

    run: str | None = None
    model: str | None = None
    status: str = "running"  # running | completed | failed | interrupted (stale is an alert)
    epoch: int | None = None
    step: int | None = None
    started: float | None = None
    last_time: float | None = None
    records: int = 0
    error: str | None = None
    steps_backwards: int = 0  # records whose step went below the last seen (a restart in one file)
    config: dict[str, Any] = field(default_factory=dict)


class RuleEngine:
    """Feed records with :meth:`observe` (and the clock with :meth:`check_stale`); get alert events."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        self.run = RunState()
        self.alerts: list[Alert] = []  # every alert ever raised, in order, pending ones included
        self._open: dict[tuple[str, str], Alert] = {}  # pending or firing, by key
        self._ratios: deque[float] = deque(maxlen=self.thresholds.window)
        self._dominance_windows: dict[str, deque[float]] = {}  # per task: largest task norm / its norm
        self._balance_samples = 0
        self._mean_norms = _Stats()
        self._max_norms = _Stats()
        self._grad_samples = 0
        self._nonfinite_samples = 0
        self._amp_overflows = 0  # measurements whose non-finite gradients were a GradScaler overflow
        self.last_grad_stats: schema.Record | None = None
        self.last_balance: schema.Record | None = None
        self.last_epoch: schema.Record | None = None

    # ------------------------------------------------------------------ inputs

    def observe(self, record: schema.Record) -> list[AlertEvent]:
        """Apply the rules to one decoded record; return the alert transitions it caused."""
        run = self.run
        run.records += 1
        where = _Where(record.get("step"), record.get("epoch"), record.get("time"))
        self._advance(where)
        events = self._apply(STALE, "run", None, where)
        kind = record["kind"]
        if kind == schema.RUN_START:
            run.run, run.model, run.started = record["run"], record["model"], record["time"]
            run.config = record.get("config") or {}
        elif kind == schema.GRAD_STATS:
            self.last_grad_stats = record
            events += self._grad_stats(record, where)
        elif kind == schema.TASK_BALANCE:
            self.last_balance = record
            events += self._task_balance(record, where)
        elif kind == schema.EPOCH:
            self.last_epoch = record
            events += self._epoch(record, where)
        elif kind == schema.RUN_END:
            events += self._run_end(record, where)
        if run.run is None:
            run.run = record["run"]
        return events

    def check_stale(self, now: float) -> list[AlertEvent]:
        """Fire or resolve the stale alert given the wall clock ``now`` (unix seconds)."""
        run = self.run
        if run.status != "running" or run.last_time is None:
            return []
        age = now - run.last_time
        where = _Where(run.step, run.epoch, now)
        if age <= self.thresholds.stale_seconds:
            return self._apply(STALE, "run", None, where)
        return self._apply(
            STALE,
            "run",
            _Observation(
                STALE,
                "run",
                "warning",
                age,
                f"No record for {human_duration(age)} and no run_end (last at {position(run.epoch, run.step)})",
                "Check the training process: it may have crashed, hung or been killed",
            ),
            where,
        )

    # ------------------------------------------------------------------ queries

    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.state == FIRING]

    @property
    def run_status(self) -> str:
        """running, stale, completed, failed or interrupted."""
        stale = self._open.get((STALE, "run"))
        if self.run.status == "running" and stale is not None and stale.state == FIRING:
            return "stale"
        return self.run.status

    def balance(self) -> CollapseVerdict:
        """The pointer/type window verdict; for other task sets, the most dominated task's."""
        th = self.thresholds
        if self._ratios or not self._dominance_windows:
            return collapse_verdict(self._ratios, th)
        full = {task: mean_ratio(w) for task, w in self._dominance_windows.items() if len(w) == th.window}
        if not full:
            samples = max(len(w) for w in self._dominance_windows.values())
            return CollapseVerdict("not_enough_data", None, samples, "Not enough data")
        task, worst = max(full.items(), key=lambda item: item[1])
        if worst > th.collapse_high:
            return CollapseVerdict(
                "dominated", worst, th.window, f"{task} task dominated (ratio={worst:.2f} > {th.collapse_high})"
            )
        return CollapseVerdict(
            "balanced", worst, th.window, f"Tasks balanced (largest/smallest gradient ratio={worst:.2f})"
        )

    def worst_severity(self) -> str | None:
        """The worst severity any alert reached while firing (or resolved after firing)."""
        seen = [a.severity for a in self.alerts if a.state != PENDING]
        return max(seen, key=SEVERITY_RANK.__getitem__) if seen else None

    def summary(self) -> MonitoringSummary:
        collapse_epochs = [a.first_epoch for a in self.alerts if a.rule == COLLAPSE and a.state != PENDING]
        fired = [a for a in self.alerts if a.state != PENDING]
        has_norms = self._mean_norms.count > 0
        return MonitoringSummary(
            grad_samples=self._mean_norms.count,
            mean_norm=self._mean_norms.mean if has_norms else None,
            mean_norm_std=self._mean_norms.std if has_norms else None,
            max_norm=self._max_norms.mean if has_norms else None,
            max_norm_peak=self._max_norms.peak if has_norms else None,
            nonfinite_samples=self._nonfinite_samples,
            amp_overflows=self._amp_overflows,
            balance_samples=self._balance_samples,
            balance=self.balance(),
            collapse_first_epoch=collapse_epochs[0] if collapse_epochs else None,
            worst_severity=self.worst_severity(),
            alerts_fired=len(fired),
        )

    # ------------------------------------------------------------------ rules

    def _advance(self, where: _Where) -> None:
        run = self.run
        if where.step is not None:
            if run.step is not None and where.step < run.step:
                run.steps_backwards += 1
            run.step = where.step
        if where.epoch is not None:
            run.epoch = where.epoch
        if where.time is not None:
            run.last_time = where.time if run.last_time is None else max(run.last_time, where.time)

    def _grad_stats(self, record: schema.Record, where: _Where) -> list[AlertEvent]:
        th = self.thresholds
        norms: dict[str, float] = record["layer_norms"]
        self._grad_samples += 1
        self._mean_norms.add(record["mean_norm"])
        self._max_norms.add(record["max_norm"])
        flags = flag_layers(norms, th)
        bad, low, high = flags.nonfinite or record.get("nonfinite_layers") or [], flags.vanishing, flags.exploding
        level = classify_norm_level(record["mean_norm"], th)
        count = max(len(bad), record["nonfinite_count"])
        amp = record.get("amp") or {}
        # Under a GradScaler an inf is the scaler's overflow (it skips the step and lowers the scale), not a
        # model fault; only overflow that persists is worth an alert.
        overflow = bool(count) and amp.get("overflow") is True
        if overflow:
            self._amp_overflows += 1
        elif count:
            self._nonfinite_samples += 1
        scale = amp.get("scale")
        events = self._apply(
            AMP_OVERFLOW,
            "scaler",
            _Observation(
                AMP_OVERFLOW,
                "scaler",
                "warning",
                scale if isinstance(scale, int | float) else None,
                f"GradScaler overflow in {count} layers, step skipped (scale {scale})",
                "Normal now and then while the scale calibrates; if it persists, lower the learning rate "
                "and check inputs and loss for NaN",
                tuple(bad),
            )
            if overflow
            else None,
            where,
        )
        if overflow:
            count = 0
        return [
            *events,
            *self._apply(
                NONFINITE,
                "gradients",
                _Observation(
                    NONFINITE,
                    "gradients",
                    "critical",
                    float(count),
                    f"Non-finite gradients (NaN/Inf) in {count} layers: {_names(bad)}",
                    "Lower the learning rate, clip gradients, check inputs and loss for NaN",
                    tuple(bad),
                )
                if count
                else None,
                where,
            ),
            *self._apply(
                VANISHING,
                "layers",
                _Observation(
                    VANISHING,
                    "layers",
                    "warning",
                    min(norms[n] for n in low),
                    f"Vanishing gradients in {len(low)} layers (norm < {th.vanishing:g}): {_names(low)}",
                    "Look for dead ReLUs or saturated activations (often a learning rate too high) and unnormalized"
                    " inputs; if the whole network's gradients are small, increase the learning rate",
                    tuple(low),
                )
                if low
                else None,
                where,
            ),
            *self._apply(
                EXPLODING,
                "layers",
                _Observation(
                    EXPLODING,
                    "layers",
                    "error",
                    max(norms[n] for n in high),
                    f"Exploding gradients in {len(high)} layers (norm > {th.exploding:g}): {_names(high)}",
                    "Reduce learning rate or clip gradients (clip_grad_norm_)",
                    tuple(high),
                )
                if high
                else None,
                where,
            ),
            *self._apply(
                NORM_LEVEL,
                "mean_norm",
                _Observation(
                    NORM_LEVEL,
                    "mean_norm",
                    level.severity,
                    record["mean_norm"],
                    f"Mean gradient norm {record['mean_norm']:.4g}: {level.status.lower()}"
                    f" (healthy {th.healthy_norm_low}-{th.healthy_norm_high})",
                    level.action,
                )
                if level.severity and math.isfinite(record["mean_norm"])
                else None,
                where,
            ),
        ]

    def _task_balance(self, record: schema.Record, where: _Where) -> list[AlertEvent]:
        ratio: float | None = record.get("ratio")
        norms: dict[str, float] = record["norms"]
        events = [] if ratio is None else self._pointer_type(ratio, where)
        if ratio is None or len(norms) > 2:
            events += self._dominance(norms, where)
        return events

    def _dominance(self, norms: dict[str, float], where: _Where) -> list[AlertEvent]:
        """Any set of tasks: a task whose weighted gradient norm stays, over the window, more than
        ``collapse_high`` times below the largest task's is dominated (the spec's collapse, per task)."""
        th = self.thresholds
        largest = max(norms.values(), default=math.nan)
        if not largest > 0:  # no gradient at all, or non-finite: nothing to judge
            return []
        self._balance_samples += 1
        dominant = max(norms, key=norms.__getitem__)
        events: list[AlertEvent] = []
        for task, norm in norms.items():
            window = self._dominance_windows.setdefault(task, deque(maxlen=th.window))
            window.append(largest / norm if norm > 0 else math.inf)
            mean = mean_ratio(window) if len(window) == th.window else None
            seen = None
            if mean is not None and mean > th.collapse_high:
                seen = _Observation(
                    COLLAPSE,
                    task,
                    "error",
                    mean,
                    f"TASK COLLAPSE: {task} task dominated (largest task gradient / its gradient = {mean:.2f}"
                    f" > {th.collapse_high}, largest now: {dominant})",
                    f"Urgent: raise the weight of the {task} loss (2x), or lower the dominant task's",
                )
            events += self._apply(COLLAPSE, task, seen, where)
        return events

    def _pointer_type(self, ratio: float, where: _Where) -> list[AlertEvent]:
        th = self.thresholds
        if math.isnan(ratio):  # both task gradients zero or non-finite: nothing to judge
            return []
        self._balance_samples += 1
        self._ratios.append(ratio)
        # One batch's ratio is noisy (the trainer prints each one); the alerts judge the window's mean, so a
        # healthy run's single-batch spikes raise nothing. Imbalance is the band, collapse the outer bounds.
        verdict = self.balance()
        imbalance = None
        if verdict.mean is not None:
            advice = recommend_ratio(verdict.mean, th)
            if advice.severity:
                imbalance = _Observation(
                    IMBALANCE,
                    TASK_PAIR,
                    "warning",
                    verdict.mean,
                    f"{advice.status}: mean Pointer/Type gradient ratio {verdict.mean:.2f} over the last "
                    f"{verdict.samples} samples (healthy range: {_band(th)})",
                    advice.action,
                )
        events = self._apply(IMBALANCE, TASK_PAIR, imbalance, where)
        collapse = None
        if verdict.collapsed:
            assert verdict.mean is not None
            collapse = _Observation(
                COLLAPSE,
                TASK_PAIR,
                "error",
                verdict.mean,
                f"TASK COLLAPSE: {verdict.text}",
                recommend_ratio(verdict.mean, th).action,
            )
        return events + self._apply(COLLAPSE, TASK_PAIR, collapse, where)

    def _epoch(self, record: schema.Record, where: _Where) -> list[AlertEvent]:
        loss = record["train_loss"]
        return self._apply(
            NONFINITE,
            "loss",
            _Observation(
                NONFINITE,
                "loss",
                "critical",
                loss,
                f"Training loss is {loss} at epoch {where.epoch}",
                "Lower the learning rate, clip gradients, check inputs and labels for NaN",
            )
            if not math.isfinite(loss)
            else None,
            where,
        )

    def _run_end(self, record: schema.Record, where: _Where) -> list[AlertEvent]:
        status = record["status"]
        self.run.status = status
        self.run.error = record.get("error")
        if status == "failed":
            return self._apply(
                RUN_FAILED,
                "run",
                _Observation(
                    RUN_FAILED,
                    "run",
                    "error",
                    None,
                    f"Run failed: {self.run.error or 'no error message'}",
                    "Read the error; fix and restart the run",
                ),
                where,
            )
        if status == "interrupted":
            return self._apply(
                RUN_INTERRUPTED,
                "run",
                _Observation(
                    RUN_INTERRUPTED,
                    "run",
                    "warning",
                    None,
                    "Run interrupted before completion",
                    "Resume or rerun training",
                ),
                where,
            )
        return []

    def _apply(self, rule: str, subject: str, seen: _Observation | None, where: _Where) -> list[AlertEvent]:
        """Advance the (rule, subject) alert by one sample: ``seen`` is the condition, or None if absent."""
        key = (rule, subject)
        alert = self._open.get(key)
        if seen is None:
            if alert is None:
                return []
            del self._open[key]
            if alert.state == PENDING:
                self.alerts.remove(alert)
                return []
            alert.state = RESOLVED
            alert.resolved_step, alert.resolved_epoch = where.step, where.epoch
            return [AlertEvent(replace(alert, layers=list(alert.layers)))]
        needed = self.thresholds.confirm if rule in CONFIRMED_RULES else 1
        escalated = False
        if alert is None:
            alert = Alert(
                rule=rule,
                subject=subject,
                severity=seen.severity,
                state=PENDING,
                value=seen.value,
                message=seen.message,
                recommendation=seen.recommendation,
                first_step=where.step,
                first_epoch=where.epoch,
                first_time=where.time,
                samples=0,
            )
            self._open[key] = alert
            self.alerts.append(alert)
        elif SEVERITY_RANK[seen.severity] > SEVERITY_RANK[alert.severity]:
            alert.severity = seen.severity
            escalated = alert.state == FIRING
        before = alert.state
        alert.samples += 1
        alert.value, alert.message, alert.recommendation = seen.value, seen.message, seen.recommendation
        alert.last_step, alert.last_epoch = where.step, where.epoch
        alert.layers = list(seen.layers)
        if alert.samples >= needed:
            alert.state = FIRING
        if alert.state != before or escalated or alert.samples == 1:
            return [AlertEvent(replace(alert, layers=list(alert.layers)), escalated=escalated)]
        return []


def replay(records: Iterable[schema.Record], thresholds: Thresholds | None = None) -> RuleEngine:
    """Run every record through a fresh engine and return it (for offline use and tests)."""
    engine = RuleEngine(thresholds)
    for record in records:
        engine.observe(record)
    return engine
