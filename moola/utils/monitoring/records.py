"""Turning what the monitor measures and what a user passes into record fields every reader accepts.

Three jobs: values from a training loop (tensors, numpy scalars, a scheduler's list of learning rates, a
metric that is None this epoch) become plain numbers or are dropped with a reason; a model is described for
``run_start`` by its class and trainable parameters; and a model with more tensors than a record line can
sensibly name gets its per-layer norms grouped by module prefix, keeping the extreme layers by name.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from moola.utils.monitoring.norms import named_parameters, unwrapped
from moola_watch.rules import WITH_WEIGHTS, is_bias, layer_bounds, zero_by_construction

#: Beyond this many tensors, ``layer_norms`` holds module-prefix groups (a line stays well under the
#: reader's 1 MiB limit: 2,000 names of ~60 bytes are ~120 kB).
MAX_LAYER_NORMS = 2000
#: How many layers are kept by name at each end of the ranking (and non-finite ones) when grouping.
TOP_LAYERS = 20


def plain(value: Any) -> Any:
    """``value`` with tensors and numpy values turned into Python numbers and lists (a 0-d or one-element
    tensor becomes its number: one host transfer, so call this on per-epoch values, not per step)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.item() if value.size == 1 else value.tolist()
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


_JSON_SCALARS = (str, int, float, bool, type(None))


def config_value(value: Any) -> Any:
    """A run's configuration as a record holds it: :func:`plain` numbers and lists, string keys, and any other
    object (a path, a dtype, a device, a class, an enum member, a function) as its ``str()``, so that what a
    framework's hyperparameters hold never costs the ``run_start`` (or the run)."""
    value = plain(value)
    if isinstance(value, Mapping):
        return {str(key): config_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [config_value(item) for item in value]
    return value if isinstance(value, _JSON_SCALARS) else str(value)


def learning_rate(value: Any) -> tuple[float | None, list[float] | None]:
    """A learning rate as given (a number, a tensor, or one per parameter group as schedulers' ``get_last_lr``
    returns) -> (the first group's, all of them when there are several)."""
    value = plain(value)
    if isinstance(value, list):
        if not value:
            return None, None
        return value[0], (value if len(value) > 1 else None)
    return value, None


def model_fields(model: nn.Module | None, model_name: str | None, limit: int) -> dict[str, Any]:
    """The ``run_start`` fields that describe ``model`` (None: not known): its name (``model_name``, else the
    class of the model inside any DDP or compile wrapper), the names of its trainable parameters (the first
    ``limit``), how many values they hold and in how many tensors."""
    params = named_parameters(model) if model is not None else []
    names = [name for name, p in params if p.requires_grad]
    return {
        "model": model_name or (type(unwrapped(model)).__name__ if model is not None else "unknown"),
        "parameters": names[:limit],
        "parameter_count": sum(p.numel() for _, p in params if p.requires_grad),
        "parameter_tensors": len(names),
    }


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def _group_norm(norms: list[float]) -> float:
    """The L2 norm of the concatenated tensors, from their norms (NaN or inf if any member is)."""
    if any(math.isnan(n) for n in norms):
        return math.nan
    return math.sqrt(math.fsum(n * n for n in norms))


@dataclass(frozen=True)
class LayerGrouping:
    """How a model's tensor names (in model order) are grouped in a record: each group's name and the indices of
    its members; ``depth`` is the module-prefix depth used. ``siblings`` maps each bias to the other tensors of
    its module (its weight): a bias named in a record comes with them, so that the watcher can tell a bias
    whose weight is merely not named from one whose weight is frozen (not measured)."""

    depth: int
    groups: tuple[tuple[str, tuple[int, ...]], ...]
    siblings: dict[int, tuple[int, ...]]


@lru_cache(maxsize=8)
def layer_grouping(names: tuple[str, ...], limit: int) -> LayerGrouping:
    """The grouping of ``names`` into at most ``limit`` groups: by the deepest module prefix that gives at most
    ``limit`` groups, or (flat names, such as a huge ParameterList) by runs of neighbours in model order. Made
    once per set of names (a model's do not change from step to step)."""
    depth = max(name.count(".") for name in names) + 1
    while depth > 1 and len({_prefix(name, depth) for name in names}) > limit:
        depth -= 1
    members: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        members.setdefault(_prefix(name, depth), []).append(index)
    if len(members) > limit:
        size = math.ceil(len(names) / limit)
        members = {f"{names[i]}..{names[min(i + size, len(names)) - 1]}": list(range(i, min(i + size, len(names))))
                   for i in range(0, len(names), size)}  # fmt: skip
    modules: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        modules.setdefault(name.rpartition(".")[0], []).append(index)
    siblings = {
        index: tuple(other for other in modules[name.rpartition(".")[0]] if not is_bias(names[other]))
        for index, name in enumerate(names)
        if is_bias(name)
    }
    return LayerGrouping(depth, tuple((key, tuple(value)) for key, value in members.items()), siblings)


def compact_layer_norms(
    layer_norms: dict[str, float], limit: int = MAX_LAYER_NORMS, top: int = TOP_LAYERS, vanishing: float = 0.0
) -> dict[str, Any]:
    """The per-layer fields of a ``grad_stats`` record: ``layer_norms`` as they are up to ``limit`` tensors;
    beyond, grouped (see :func:`layer_grouping`; ``layer_groups`` says how, its ``sizes`` how many tensors each
    group holds, in ``layer_norms``' order), with ``top_layers`` naming the ``top`` largest and smallest tensors
    and up to ``top`` non-finite ones, each bias with its module's weights (``layer_groups`` says
    ``with_weights``), so the worst are never hidden inside a group: those are what the
    watcher's layer rules judge. A bias below ``vanishing`` (a gradient L2 norm) that is zero by construction
    (:func:`moola_watch.rules.zero_by_construction`: the rule the watcher applies to the tensors it is shown) is
    not ranked among the smallest."""
    if len(layer_norms) <= limit:
        return {"layer_norms": layer_norms}
    names, values = tuple(layer_norms), list(layer_norms.values())
    grouping = layer_grouping(names, limit)
    grouped = {key: _group_norm([values[i] for i in members]) for key, members in grouping.groups}
    finite = [i for i, value in enumerate(values) if math.isfinite(value)]
    structural = zero_by_construction(layer_norms, layer_bounds(vanishing=vanishing))
    ranked = [i for i in finite if names[i] not in structural] if structural else finite
    nonfinite = [i for i, value in enumerate(values) if not math.isfinite(value)][:top]
    kept = [*heapq.nsmallest(top, ranked, key=values.__getitem__), *heapq.nlargest(top, finite, key=values.__getitem__),
            *nonfinite]  # fmt: skip
    kept += [other for i in kept for other in grouping.siblings.get(i, ())]  # each named bias's weight
    # sizes: a reader's RMS per tensor of a group is its norm over the root of its size (the heatmap's rows)
    sizes = [len(members) for _key, members in grouping.groups]
    groups = {"depth": grouping.depth, "tensors": len(layer_norms), "groups": len(grouped), "top": top, "sizes": sizes,
              WITH_WEIGHTS: True}  # fmt: skip
    return {
        "layer_norms": grouped,
        "layer_groups": groups,
        "top_layers": {names[i]: values[i] for i in sorted(set(kept))},
    }
