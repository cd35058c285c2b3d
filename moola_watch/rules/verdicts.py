"""Single-sample verdicts: what one layer norm, one ratio or one window of ratios means, in the spec's words.

Pure functions of numbers and :class:`Thresholds`; the trainer prints these and the rules raise alerts from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from moola_watch.rules.thresholds import Thresholds

DEFAULTS = Thresholds()


@dataclass(frozen=True)
class LayerFlags:
    """Layers whose gradient norm is non-finite, vanishing or exploding."""

    nonfinite: tuple[str, ...]
    vanishing: tuple[str, ...]
    exploding: tuple[str, ...]


NO_LAYER_FLAGS = LayerFlags((), (), ())


def judged_layer_norms(record: Mapping[str, object]) -> Mapping[str, float]:
    """The per-tensor norms of a ``grad_stats`` record that the layer rules judge: its ``layer_norms``, or for a
    model of more tensors than a record names (``layer_groups`` present: ``layer_norms`` holds module groups,
    the L2 norm of many tensors each, which no per-tensor threshold fits) its ``top_layers``, the tensors at
    both ends of the ranking and the non-finite ones, by name."""
    if "layer_groups" in record and isinstance(top := record.get("top_layers"), Mapping):
        return top
    norms = record["layer_norms"]
    assert isinstance(norms, Mapping)
    return norms


#: In a big model's ``layer_groups``: every bias the record names comes with its module's measured weights.
WITH_WEIGHTS = "with_weights"


def names_every_weight(record: Mapping[str, object]) -> bool:
    """Whether a ``grad_stats`` record names the weight of each bias it names wherever that weight was measured
    (a weight it does not name is frozen): every record that names every tensor, and a big model's record whose
    ``layer_groups`` say ``with_weights`` (older ones named their extreme tensors alone)."""
    groups = record.get("layer_groups")
    return groups is None or (isinstance(groups, Mapping) and groups.get(WITH_WEIGHTS) is True)


def flag_layers(layer_norms: Mapping[str, float], th: Thresholds, *, complete: bool = True) -> LayerFlags:
    """Judge every layer norm. The common all-healthy case is decided by C-level ``sum``/``min``/``max``
    with no per-layer Python work (a model may have thousands of tensors).

    A bias whose module's weight gets gradient is not vanishing: its gradient is zero by construction (a bias
    before a normalization, which removes it; a key bias in softmax attention, which ignores it). A dead ReLU
    silences a layer's weight and bias together, so real vanishing stays flagged. Where the module's weight is
    frozen (BitFit trains the biases alone) there is no weight to tell by: such a bias is zero by construction
    unless its gradient is exactly zero, as a dead unit's is (one zero by construction is rounding error,
    1e-13). A LoRA ``A`` matrix is gated by its ``B``, which starts at zero: while ``B`` gets gradient, a small
    ``A`` gradient is ``B`` still being young, not vanishing. The bias rule needs each bias's measured weight
    named: not ``complete`` (see :func:`names_every_weight`), a weight may be missing only from the record, and a
    bias counts as zero by construction only beside its weight."""
    values = layer_norms.values()
    if not values or (math.isfinite(sum(values)) and th.vanishing <= min(values) and max(values) <= th.exploding):
        return NO_LAYER_FLAGS
    nonfinite, vanishing, exploding = [], [], []
    for name, norm in layer_norms.items():  # one pass: non-finite first, so NaN/inf land nowhere else
        if not math.isfinite(norm):
            nonfinite.append(name)
        elif norm < th.vanishing:
            vanishing.append(name)
        elif norm > th.exploding:
            exploding.append(name)
    structural = _zero_by_construction(vanishing, layer_norms, th, complete)
    return LayerFlags(tuple(nonfinite), tuple(name for name in vanishing if name not in structural), tuple(exploding))


def zero_by_construction(layer_norms: Mapping[str, float], th: Thresholds, *, complete: bool = True) -> set[str]:
    """The biases below the vanishing bound whose module has a non-bias tensor at or above it, or, not exactly
    zero, none at all, and the LoRA ``A`` matrices whose ``B`` is at or above it: zero by construction, not
    vanishing (see :func:`flag_layers`). Given each layer's peak norm over a run, those that were never more
    than that."""
    low = [name for name, norm in layer_norms.items() if norm < th.vanishing]
    return _zero_by_construction(low, layer_norms, th, complete)


def is_bias(name: str) -> bool:
    """Is ``name`` a bias (its last part ``bias``, ``bias_k``, ...)?"""
    return name.rpartition(".")[2].startswith("bias")


def _zero_by_construction(low: list[str], layer_norms: Mapping[str, float], th: Thresholds, complete: bool) -> set[str]:
    """The biases among ``low`` whose module has a non-bias tensor with a gradient norm at or above the
    vanishing threshold, and, where ``layer_norms`` is ``complete``, those not exactly zero whose module has no
    non-bias tensor in it (frozen: measured tensors are those that get gradient)."""
    gated = _gated_lora_a(low, layer_norms, th)
    modules = {name.rpartition(".")[0] for name in low if is_bias(name)}
    if not modules:
        return gated
    weighted, fed = set(), set()
    for name, norm in layer_norms.items():
        if (module := name.rpartition(".")[0]) in modules and not is_bias(name):
            weighted.add(module)
            if norm >= th.vanishing:
                fed.add(module)
    return gated | {
        name
        for name in low
        if is_bias(name)
        and (
            (module := name.rpartition(".")[0]) in fed
            or (complete and module not in weighted and layer_norms[name] != 0.0)
        )
    }


def _gated_lora_a(low: list[str], layer_norms: Mapping[str, float], th: Thresholds) -> set[str]:
    """The LoRA ``A`` matrices among ``low`` whose ``B`` (the same name with ``lora_B``) gets gradient. ``B``
    starts at zero and ``A``'s gradient passes through it (``B^T`` times the output's), so ``A`` is as small as
    ``B`` is young: gated, not vanishing. A ``B`` with no gradient either leaves ``A`` flagged."""
    gated = set()
    for name in low:
        if "lora_A" in name:
            partner = layer_norms.get(name.replace("lora_A", "lora_B"))
            if partner is not None and partner >= th.vanishing:
                gated.add(name)
    return gated


def layer_bounds(*, vanishing: float | None = None, exploding: float | None = None) -> Thresholds:
    """The defaults with the layer bound given; the other, where the default's would be out of order beside it,
    moved to it (a vanishing bound of 20 asks nothing of the exploding one)."""
    low = DEFAULTS.vanishing if vanishing is None else vanishing
    high = DEFAULTS.exploding if exploding is None else exploding
    if vanishing is None:
        low = min(low, high)
    if exploding is None:
        high = max(high, low)
    return Thresholds(vanishing=low, exploding=high)


def vanishing_layers(layer_norms: Mapping[str, float], threshold: float = 1e-7) -> list[str]:
    """Names of layers whose finite gradient norm is below ``threshold``."""
    return list(flag_layers(layer_norms, layer_bounds(vanishing=threshold)).vanishing)


def exploding_layers(layer_norms: Mapping[str, float], threshold: float = 10.0) -> list[str]:
    """Names of layers whose finite gradient norm is above ``threshold``."""
    return list(flag_layers(layer_norms, layer_bounds(exploding=threshold)).exploding)


@dataclass(frozen=True)
class Verdict:
    """What a value means: a status name, its severity (None when healthy) and what to do."""

    status: str
    severity: str | None
    action: str


def band(th: Thresholds) -> str:
    return f"{th.balance_low}-{th.balance_high}"


def recommend_ratio(ratio: float, th: Thresholds = DEFAULTS) -> Verdict:
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


# The spec's table, one verdict per row (made once: the rules ask on every grad_stats record).
_NORM_EXPLODING = Verdict("Exploding", "error", "Reduce learning rate")
_NORM_LARGE = Verdict("Large", "warning", "Check gradient clipping")
_NORM_VANISHING = Verdict("Vanishing", "warning", "Increase learning rate")
_NORM_HEALTHY = Verdict("Healthy", None, "No change needed")
_NORM_ACCEPTABLE = Verdict("Acceptable", None, "No change needed")


def classify_norm_level(mean_norm: float, th: Thresholds = DEFAULTS) -> Verdict:
    """The spec's gradient-norm table for the mean of the layer norms."""
    if mean_norm > th.norm_exploding:
        return _NORM_EXPLODING
    if mean_norm > th.norm_large:
        return _NORM_LARGE
    if mean_norm < th.norm_low:
        return _NORM_VANISHING
    if th.healthy_norm_low <= mean_norm <= th.healthy_norm_high:
        return _NORM_HEALTHY
    return _NORM_ACCEPTABLE


def balance_message(ratio: float, epoch: int | None, th: Thresholds = DEFAULTS) -> str:
    """The trainer's line(s) for one balance sample, in the spec's wording."""
    if th.balance_low <= ratio <= th.balance_high:
        return f"Task balance: Tasks balanced (ratio={ratio:.2f})"
    where = f" at epoch {epoch}" if epoch is not None else ""
    return f"Task imbalance detected{where}!\nPointer/Type gradient ratio: {ratio:.2f} (healthy range: {band(th)})"


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
    """Arithmetic mean of (non-NaN) ratios. An infinite ratio is a sample in which a task got no gradient at
    all: on a batch now and then that is a batch without its labels (a masked loss), not collapse, so such
    samples are left out of the mean while they are fewer than half; from half on, the mean is infinite."""
    finite = [ratio for ratio in ratios if math.isfinite(ratio)]
    if 2 * len(finite) > len(ratios):
        return math.fsum(finite) / len(finite)
    return max(ratios)


def collapse_verdict(ratios: Sequence[float], th: Thresholds = DEFAULTS) -> CollapseVerdict:
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
        state, text = "imbalanced", f"Tasks imbalanced (ratio={mean:.2f}, healthy range: {band(th)})"
    return CollapseVerdict(state, mean, len(usable), text)


def names(items: Sequence[str], limit: int = 3) -> str:
    """The first ``limit`` names (of layers, of tasks), and how many more."""
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def position(epoch: int | None, step: int | None) -> str:
    """'epoch 12, step 340', whichever is known, or 'the start' when neither is."""
    parts = [f"epoch {epoch}" if epoch is not None else "", f"step {step}" if step is not None else ""]
    return ", ".join(part for part in parts if part) or "the start"
