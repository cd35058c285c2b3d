"""Turning what the monitor measures and what a user passes into record fields every reader accepts.

Two jobs: values from a training loop (tensors, numpy scalars, a scheduler's list of learning rates, a metric
that is None this epoch) become plain numbers or are dropped with a reason; and a model with more tensors
than a record line can sensibly name gets its per-layer norms grouped by module prefix, keeping the extreme
layers by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

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


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def _group_norm(norms: list[float]) -> float:
    """The L2 norm of the concatenated tensors, from their norms (NaN or inf if any member is)."""
    if any(math.isnan(n) for n in norms):
        return math.nan
    return math.sqrt(math.fsum(n * n for n in norms))


def compact_layer_norms(
    layer_norms: dict[str, float], limit: int = MAX_LAYER_NORMS, top: int = TOP_LAYERS
) -> dict[str, Any]:
    """The per-layer fields of a ``grad_stats`` record: ``layer_norms`` as they are up to ``limit`` tensors;
    beyond, grouped by the deepest module prefix that gives at most ``limit`` groups (``layer_groups`` says
    how), with ``top_layers`` naming the ``top`` largest and smallest tensors and up to ``top`` non-finite
    ones, so the worst are never hidden inside a group."""
    if len(layer_norms) <= limit:
        return {"layer_norms": layer_norms}
    depth = max(name.count(".") for name in layer_norms) + 1
    while depth > 1 and len({_prefix(name, depth) for name in layer_norms}) > limit:
        depth -= 1
    members: dict[str, list[float]] = {}
    for name, norm in layer_norms.items():
        members.setdefault(_prefix(name, depth), []).append(norm)
    if len(members) > limit:  # flat names (a huge ParameterList): runs of neighbours in model order
        names = list(layer_norms)
        size = math.ceil(len(names) / limit)
        runs = [names[i : i + size] for i in range(0, len(names), size)]
        members = {f"{run[0]}..{run[-1]}": [layer_norms[name] for name in run] for run in runs}
    grouped = {prefix: _group_norm(norms) for prefix, norms in members.items()}
    finite = sorted((norm, name) for name, norm in layer_norms.items() if math.isfinite(norm))
    nonfinite = [name for name, norm in layer_norms.items() if not math.isfinite(norm)][:top]
    kept = [name for _, name in finite[:top]] + [name for _, name in finite[-top:]] + nonfinite
    return {
        "layer_norms": grouped,
        "layer_groups": {"depth": depth, "tensors": len(layer_norms), "groups": len(grouped)},
        "top_layers": {name: layer_norms[name] for name in dict.fromkeys(kept)},
    }
