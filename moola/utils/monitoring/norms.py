"""Per-layer gradient L2 norms, cheaply: one grouped ``torch._foreach_norm`` per (device, dtype) and one
device-to-host transfer for the whole model, never one ``.item()`` per parameter (as ``clip_grad_norm_``).
Pure measuring: no records, no rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
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


def _group_norms(members: list[torch.Tensor], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Norms of same-(device, dtype) tensors as a float64 vector on ``device``: one ``_foreach_norm``, or one
    norm each for what the foreach kernel cannot take (sparse tensors, exotic devices)."""
    # Low-precision gradients are reduced in float32 so the norm itself keeps its digits.
    wide = torch.float32 if dtype in (torch.float16, torch.bfloat16) else None
    try:
        stacked = torch.stack(torch._foreach_norm(members, 2.0, dtype=wide))
    except (NotImplementedError, RuntimeError):
        norms = [torch.linalg.vector_norm(t.coalesce().values() if t.is_sparse else t) for t in members]
        stacked = torch.stack([full_tensor(norm) for norm in norms])
    # Sharded gradients (FSDP2, DTensor) give per-shard partial norms: one reduction over the shard group
    # makes them the norms of the full gradients. Every rank must take part, as in any collective.
    return full_tensor(stacked).to(device=device, dtype=torch.float64)


@torch.no_grad()
def norms_on_device(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor as one float64 vector on the first tensor's device, without a host sync:
    one ``_foreach_norm`` per (device, dtype) group, as ``clip_grad_norm_`` does."""
    first_device = tensors[0].device
    groups = _group_tensors_by_device_and_dtype([list(tensors)], with_indices=True)
    parts = [
        (_group_norms(members, dtype, first_device), indices)
        for (_device, dtype), ([members], indices) in groups.items()
    ]
    if len(parts) == 1:
        return parts[0][0]  # one group keeps the input order
    out = torch.empty(len(tensors), dtype=torch.float64, device=first_device)
    for values, indices in parts:
        out.index_copy_(0, torch.tensor(indices, device=first_device), values)
    return out


def _present_norms(named: Sequence[tuple[str, nn.Parameter]]) -> dict[str, float]:
    names, grads = [], []
    for name, parameter in named:
        # A frozen parameter may still hold a zeroed .grad (zero_grad(set_to_none=False)): not a vanishing layer.
        if parameter.grad is not None and parameter.requires_grad:
            names.append(name)
            grads.append(parameter.grad)
    if not grads:
        return {}
    return dict(zip(names, norms_on_device(grads).tolist(), strict=True))  # the one host transfer


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

    @torch.no_grad()
    def norms(self) -> dict[str, float]:
        """Norm of every present gradient, by parameter name; one host transfer."""
        grads = [p.grad for p in self.params]
        if not grads or any(g is None for g in grads) or not all(p.requires_grad for p in self.params):
            return _present_norms(self.named)  # some gradients missing or frozen: group what is there
        one = self.single_group
        values = _group_norms(grads, grads[0].dtype, grads[0].device) if one else norms_on_device(grads)
        return dict(zip(self.names, values.tolist(), strict=True))  # the one host transfer


def compute_layer_gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of each parameter's gradient, keyed by parameter name (parameters without a gradient, and
    frozen ones, are left out). One device-to-host transfer for the whole model."""
    return _present_norms(list(model.named_parameters()))


def gradient_statistics_from_norms(layer_norms: dict[str, float]) -> dict[str, Any]:
    """The ``grad_stats`` body for given per-layer norms: the total norm (L2 over all gradients, NaN/inf
    if any layer is), mean/std/min/max over the finite layer norms, and the non-finite layers."""
    norms = np.fromiter(layer_norms.values(), dtype=np.float64, count=len(layer_norms))
    finite_mask = np.isfinite(norms)
    finite = norms[finite_mask]
    bad = [] if finite_mask.all() else [name for name, ok in zip(layer_norms, finite_mask, strict=True) if not ok]
    # Not np.dot for the sum of squares: BLAS threads would fight torch's for the cores.
    total = (math.nan if np.isnan(norms).any() else math.inf) if bad else math.sqrt(float(np.square(norms).sum()))
    if finite.size:
        mean, std, low, high = (float(v) for v in (finite.mean(), finite.std(), finite.min(), finite.max()))
    else:
        mean = std = low = high = math.nan
    return {
        "layer_norms": layer_norms,
        "total_norm": total,
        "mean_norm": mean,
        "std_norm": std,
        "min_norm": low,
        "max_norm": high,
        "nonfinite_count": len(bad),
        "nonfinite_layers": bad,
    }


def compute_gradient_statistics(model: nn.Module) -> dict[str, Any]:
    """Per-layer gradient norms and their statistics (see :func:`gradient_statistics_from_norms`)."""
    return gradient_statistics_from_norms(compute_layer_gradient_norms(model))
