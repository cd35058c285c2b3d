"""Per-layer gradient L2 norms, cheaply: one grouped ``torch._foreach_norm`` per (device, dtype) and one
device-to-host transfer for the whole model, never one ``.item()`` per parameter (as ``clip_grad_norm_``).
Pure measuring: no records, no rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter, is_not
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from moola.utils.monitoring.distributed import full_tensor

# Every parameter or submodule registered anywhere (a head added, a Parameter replaced, an adapter injected)
# bumps this count, so a plan knows it may be stale without walking the module tree on every measurement.
_registrations = 0


def _count_registration(*_args: object) -> None:
    global _registrations
    _registrations += 1


register_module_parameter_registration_hook(_count_registration)
register_module_module_registration_hook(_count_registration)

# C-level attribute reads for the per-step checks over every parameter (no Python frame per parameter).
_GRAD = attrgetter("grad")
_REQUIRES_GRAD = attrgetter("requires_grad")


def _group_norms(members: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Norms of same-(device, dtype) tensors as one vector on their device, in ``dtype`` (float32 for half
    precision): one ``_foreach_norm``, or one norm each for what the foreach kernel cannot take (sparse tensors,
    exotic devices)."""
    # Low-precision gradients are reduced in float32 so the norm itself keeps its digits. float32 ones ask for it
    # too (0.4 us of a 21-tensor LSTM's 35): part of a model cast to bfloat16 after the plan was made
    # (``model.head.to(torch.bfloat16)`` registers nothing) would otherwise get bfloat16 norms, 0.4% off.
    wide = torch.float32 if dtype in (torch.float16, torch.bfloat16, torch.float32) else None
    try:
        stacked = torch.stack(torch._foreach_norm(members, 2, wide) if wide else torch._foreach_norm(members))
    except (NotImplementedError, RuntimeError):
        norms = [torch.linalg.vector_norm(t.coalesce().values() if t.is_sparse else t) for t in members]
        stacked = torch.stack([full_tensor(norm) for norm in norms])
    # Sharded gradients (FSDP2, DTensor) give per-shard partial norms: one reduction over the shard group
    # makes them the norms of the full gradients. Every rank must take part, as in any collective.
    return full_tensor(stacked)


def _mixed_norms(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """Norms of tensors of several (device, dtype) groups as one float64 vector on the first tensor's device, in
    group order, and where each tensor's norm sits in it: reordered on the host after the transfer, so no index
    tensor has to be sent to the device (a host-to-device copy is a sync too)."""
    device = tensors[0].device
    parts, order = [], []
    for (_device, dtype), ([members], indices) in _group_tensors_by_device_and_dtype(
        [tensors], with_indices=True
    ).items():
        parts.append(_group_norms(members, dtype).to(device=device, dtype=torch.float64))
        order += indices
    position = [0] * len(tensors)
    for at, index in enumerate(order):
        position[index] = at
    return torch.cat(parts), position


#: Wrappers whose ``module`` is the model they run (DDP's and DataParallel's ``module.`` name prefix).
_PARALLEL = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside DDP, DataParallel and ``torch.compile`` wrappers (any nesting): the same parameters,
    under the names and the class the user wrote, however the run wrapped it (one process or several)."""
    while True:
        if isinstance(model, _PARALLEL):
            model = model.module
        elif isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = inner
        else:
            return model


def named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``model.named_parameters()`` of the :func:`unwrapped` model, with ``torch.compile``'s ``_orig_mod.`` also
    left out of compiled submodules' names: a wrapped model's layers are recorded under the names of the model
    it wraps."""
    return [(name.replace("_orig_mod.", ""), p) for name, p in unwrapped(model).named_parameters()]


class NormPlan:
    """A model's parameters grouped once by (device, dtype). A gradient always has its parameter's device and
    dtype, so while the parameters stay the same objects, each step needs no grouping."""

    def __init__(self, named: list[tuple[str, nn.Parameter]], model: nn.Module | None = None) -> None:
        self.model = model
        self.registrations = _registrations
        self.named = named
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        # One (device, dtype) for all (the common case) needs no grouping per step. Which device and dtype is
        # read off the gradients themselves: model.to() and model.half() change them without registering anything.
        self.single_group = len({(p.device, p.dtype) for p in self.params}) == 1

    def is_current(self, model: nn.Module) -> bool:
        """True while no parameter or module was registered anywhere since the plan was made for ``model``:
        then its parameters are the very ones planned for, and no walk of the module tree is needed."""
        return model is self.model and self.registrations == _registrations

    def norms(self, extra: torch.Tensor | None = None) -> tuple[list[str], list[float], list[float]]:
        """The names and L2 norms of every present gradient, in model order, and the values of ``extra`` (a
        tensor to bring back too, such as a GradScaler's scale): all in one host transfer, the only host sync.

        A frozen parameter that still holds a zeroed ``.grad`` (``zero_grad(set_to_none=False)``) is left out:
        it is not a vanishing layer."""
        # Not under torch.no_grad() (1.3 us a call, 4% of the LSTM's measurement): a gradient requires grad only
        # after backward(create_graph=True), and the few nodes recorded then are freed with the result.
        names, grads = self.names, list(map(_GRAD, self.params))
        single = self.single_group
        if not all(map(is_not, grads, repeat(None))) or not all(map(_REQUIRES_GRAD, self.params)):
            present = [(name, p.grad) for name, p in self.named if p.grad is not None and p.requires_grad]
            names, grads = [name for name, _ in present], [grad for _, grad in present]
            single = len({(g.device, g.dtype) for g in grads}) == 1
        if not grads:
            return [], [], extra.tolist() if extra is not None else []
        if single:
            on_device, position = _group_norms(grads, grads[0].dtype), None
        else:
            on_device, position = _mixed_norms(grads)
        if extra is None and position is None:
            return names, on_device.tolist(), []  # the one host transfer
        if extra is not None:
            on_device = torch.cat([on_device, extra.to(on_device.device, on_device.dtype).reshape(-1)])
        host = on_device.tolist()  # the one host transfer
        values = host[: len(names)] if position is None else [host[at] for at in position]
        return names, values, host[len(names) :]


def compute_layer_gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of each parameter's gradient, keyed by parameter name (parameters without a gradient, and
    frozen ones, are left out). One device-to-host transfer for the whole model."""
    names, values, _ = NormPlan(named_parameters(model)).norms()
    return dict(zip(names, values, strict=True))


def gradient_statistics(names: Sequence[str], norms: list[float]) -> dict[str, Any]:
    """The ``grad_stats`` statistics of per-layer norms (``names[i]``'s is ``norms[i]``): the total norm (L2
    over all gradients, NaN/inf if any layer is), mean/std/min/max over the finite layer norms, and the
    non-finite layers. Computed on the host from the transferred norms by C-level builtins (``sum``,
    ``math.hypot``, ``math.dist``, ``min``, ``max``): no per-layer Python work unless a layer is non-finite."""
    total_sum = sum(norms)
    if math.isfinite(total_sum):
        finite, bad, total = norms, [], math.hypot(*norms)
    else:  # a non-finite layer (or a sum beyond the float range): sort them out one by one
        ok = [math.isfinite(norm) for norm in norms]
        finite = [norm for norm, keep in zip(norms, ok, strict=True) if keep]
        bad = [name for name, keep in zip(names, ok, strict=True) if not keep]
        total = (math.nan if any(map(math.isnan, norms)) else math.inf) if bad else math.hypot(*norms)
        total_sum = sum(finite)
    count = len(finite)
    if count:
        mean = total_sum / count
        # Two-pass population std: the distance from (mean, ..., mean), scaled, in C.
        std = math.dist(finite, [mean] * count) / math.sqrt(count)
        low, high = min(finite), max(finite)
    else:
        mean = std = low = high = math.nan
    return {
        "total_norm": total,
        "mean_norm": mean,
        "std_norm": std,
        "min_norm": low,
        "max_norm": high,
        "nonfinite_count": len(bad),
        "nonfinite_layers": bad,
    }


def gradient_statistics_from_norms(layer_norms: dict[str, float]) -> dict[str, Any]:
    """The ``grad_stats`` body for given per-layer norms: ``layer_norms`` and their statistics (see
    :func:`gradient_statistics`)."""
    return {"layer_norms": layer_norms, **gradient_statistics(list(layer_norms), list(layer_norms.values()))}


def compute_gradient_statistics(model: nn.Module) -> dict[str, Any]:
    """Per-layer gradient norms and their statistics (see :func:`gradient_statistics_from_norms`)."""
    return gradient_statistics_from_norms(compute_layer_gradient_norms(model))
