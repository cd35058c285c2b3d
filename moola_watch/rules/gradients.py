"""Rules on ``grad_stats`` records: non-finite gradients, GradScaler overflow, vanishing and exploding layers,
the mean norm's level. Each declares its condition twice, side by side: per record (what the engine evaluates)
and over a batch's columns (``_..._columns``: where in a batch it may hold, for the offline fast path)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from moola_watch import schema
from moola_watch.counts import counted
from moola_watch.rules.columns import GradColumns
from moola_watch.rules.evidence import Evidence
from moola_watch.rules.lifecycle import Observation
from moola_watch.rules.rule import Findings, Rule
from moola_watch.rules.thresholds import Thresholds
from moola_watch.rules.verdicts import classify_norm_level, judged_layer_norms, names

VANISHING = "vanishing"
EXPLODING = "exploding"
NONFINITE = "nonfinite"
NORM_LEVEL = "norm_level"
AMP_OVERFLOW = "amp_overflow"
GRAD = frozenset({schema.GRAD_STATS})


def count_of(layers: Sequence[str], record: schema.Record) -> str:
    """How many layers, in words: 'at least N layers' when a big model's record names only its ``top`` extremes
    (``layer_groups``) and every one of them at that end is flagged, so more may be; else ``N layers`` (``1
    layer``)."""
    groups = record.get("layer_groups")
    top = groups.get("top") if isinstance(groups, dict) else None
    at_least = "at least " if isinstance(top, int) and len(layers) >= top else ""
    return at_least + counted(len(layers), "layer")


def _bad_layers(ev: Evidence, record: schema.Record) -> Sequence[str]:
    return ev.layer_flags.nonfinite or tuple(record.get("nonfinite_layers") or ())


def _nonfinite(ev: Evidence, record: schema.Record, _th: Thresholds) -> Findings:
    count, overflow = ev.nonfinite
    if not count or overflow:
        return [("gradients", None)]
    bad = _bad_layers(ev, record)
    return [("gradients", Observation(
        "critical", float(count), f"Non-finite gradients (NaN/Inf) in {counted(count, 'layer')}: {names(bad)}",
        "Lower the learning rate, clip gradients, check inputs and loss for NaN", tuple(bad),
    ))]  # fmt: skip


def _any_nonfinite_columns(cols: GradColumns, _th: Thresholds) -> np.ndarray:
    """Both rules above need a non-finite layer (an overflow is one the scaler skipped)."""
    return cols.nonfinite > 0


#: A GradScaler that has halved its scale below this has skipped step after step (from its initial 65536,
#: sixteen in a row): no calibration gets there; its gradients are non-finite whatever the scale, a real NaN/Inf.
SCALE_GIVEN_UP = 1.0


def _amp_overflow(ev: Evidence, record: schema.Record, _th: Thresholds) -> Findings:
    count, overflow = ev.nonfinite
    if not overflow:
        return [("scaler", None)]
    scale = (record.get("amp") or {}).get("scale")
    value = scale if isinstance(scale, int | float) else None
    if value is not None and value < SCALE_GIVEN_UP:
        return [("scaler", Observation(
            "critical", value,
            f"Non-finite gradients (NaN/Inf) in {counted(count, 'layer')} under the GradScaler at every scale: it "
            f"has skipped step after step down to a scale of {scale:.3g}, so this is no overflow but a real NaN/Inf, "
            "and no step is being taken",
            "Lower the learning rate, clip gradients, check inputs and loss for NaN", tuple(_bad_layers(ev, record)),
        ))]  # fmt: skip
    return [("scaler", Observation(
        "warning", value,
        f"GradScaler overflow in {counted(count, 'layer')}, step skipped (scale {scale})",
        "Normal now and then while the scale calibrates; if it persists, lower the learning rate and check "
        "inputs and loss for NaN", tuple(_bad_layers(ev, record)),
    ))]  # fmt: skip


def _levels_unknown(ev: Evidence) -> bool:
    """Whether the record has non-finite layers: then it tells nothing of the gradients' level, and an alert on
    that keeps its state (a NaN is not below the exploding bound: an exploding alert resolved, and was paged as
    resolved, at the step the gradients became NaN). The non-finite rules speak for the record."""
    return ev.nonfinite[0] > 0


def _vanishing(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    if _levels_unknown(ev):
        return []
    norms = judged_layer_norms(record)
    low = ev.layer_flags.vanishing
    if not low:
        return [("layers", None)]
    return [("layers", Observation(
        "warning", min(norms[n] for n in low),
        f"Vanishing gradients in {count_of(low, record)} (norm < {th.vanishing:g}): {names(low)}",
        "Look for dead ReLUs or saturated activations (often a learning rate too high) and unnormalized inputs; "
        "if the whole network's gradients are small, increase the learning rate", tuple(low),
    ))]  # fmt: skip


def _vanishing_columns(cols: GradColumns, th: Thresholds) -> np.ndarray:
    return cols.low < th.vanishing


def _exploding(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    if _levels_unknown(ev):
        return []
    norms = judged_layer_norms(record)
    high = ev.layer_flags.exploding
    if not high:
        return [("layers", None)]
    clip = clipped_at(ev.run.config)
    action = ("Reduce learning rate or clip gradients (clip_grad_norm_)" if clip is None else
              f"These norms are before the trainer's clip at {clip:g}: if the loss is healthy, the tensor's gradient "
              "is large by nature (an embedding's sums every token's): raise --exploding for this model; else "
              "reduce the learning rate")  # fmt: skip
    return [("layers", Observation(
        "error", max(norms[n] for n in high),
        f"Exploding gradients in {count_of(high, record)} (norm > {th.exploding:g}): {names(high)}",
        action, tuple(high),
    ))]  # fmt: skip


def clipped_at(config: Mapping[str, object]) -> float | None:
    """The gradient-norm clip a run's recorded config names (the HF Trainer's ``max_grad_norm``, Lightning's
    ``gradient_clip_val``), if one is on."""
    for name in ("max_grad_norm", "gradient_clip_val"):
        value = config.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
    return None


def _exploding_columns(cols: GradColumns, th: Thresholds) -> np.ndarray:
    return cols.high > th.exploding


def _norm_level(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    mean = record["mean_norm"]
    if _levels_unknown(ev) or not math.isfinite(mean):
        return []
    level = classify_norm_level(mean, th)
    if not level.severity:
        return [("mean_norm", None)]
    spread_thin = level.status == "Vanishing" and _total_norm(record) >= th.healthy_norm_low
    return [("mean_norm", Observation(
        level.severity, mean,
        f"Mean gradient norm {mean:.4g}: {level.status.lower()} (healthy {th.healthy_norm_low}-{th.healthy_norm_high})",
        _spread_thin_action(record, mean) if spread_thin else level.action,
    ))]  # fmt: skip


def _total_norm(record: schema.Record) -> float:
    total = record.get("total_norm")
    return total if isinstance(total, float) and math.isfinite(total) else 0.0


def _spread_thin_action(record: schema.Record, mean: float) -> str:
    """What to do about a small mean layer norm whose total norm is not small: the mean is of many tensors (it
    shrinks about as one over the square root of their number for the same total), so the spec's band, set for a
    model of a few tensors, calls the gradient vanishing where it is not, and a higher learning rate is no cure."""
    groups = record.get("layer_groups")
    tensors = groups.get("tensors") if isinstance(groups, dict) else None
    count = tensors if isinstance(tensors, int) else len(record.get("layer_norms") or ())
    tenth = float(f"{mean / 10:.1g}")
    return (f"The total gradient norm is {_total_norm(record):.3g}: the mean is small because it is spread over "
            f"{counted(count, 'tensor')}, not because the gradients vanish; do not raise the learning rate for it. "
            f"Judge this model with a lower --norm-low (a tenth of this mean: {tenth:g})")  # fmt: skip


def _norm_level_columns(cols: GradColumns, th: Thresholds) -> np.ndarray:
    """Outside [norm_low, norm_large] (or above norm_exploding, should that be set lower) has a severity."""
    mean = cols.mean_norm
    return (mean < th.norm_low) | (mean > min(th.norm_large, th.norm_exploding))


RULES = (
    Rule(AMP_OVERFLOW, "warning", True, GRAD, _amp_overflow, "GradScaler overflow that persists",
         _any_nonfinite_columns),
    Rule(NONFINITE, "critical", False, GRAD, _nonfinite, "any NaN/Inf layer gradient norm, at once",
         _any_nonfinite_columns),
    Rule(VANISHING, "warning", True, GRAD, _vanishing, "a layer's gradient norm below `vanishing`", _vanishing_columns),
    Rule(EXPLODING, "error", True, GRAD, _exploding,
         "a layer's gradient norm above `exploding` in `confirm` samples running (one spike before a clip is not)",
         _exploding_columns),
    Rule(NORM_LEVEL, "error", True, GRAD, _norm_level, "the mean layer norm outside the spec's bands",
         _norm_level_columns),
)  # fmt: skip
