"""The spec's names for gradient monitoring, in one place: a facade over the small modules that do the work.

- :mod:`~moola.utils.monitoring.norms`: per-layer gradient norms and their statistics;
- :mod:`~moola.utils.monitoring.task_balance`: task balance on shared parameters or a representation;
- :mod:`~moola.utils.monitoring.monitor`: :class:`GradientMonitor`, the hooks, composing
  :mod:`~moola.utils.monitoring.cadence` (when to measure), :mod:`~moola.utils.monitoring.stats_probe` and
  :mod:`~moola.utils.monitoring.balance_probe` (what) and :mod:`~moola.utils.monitoring.run_output` (records,
  alerts);
- :mod:`~moola.utils.monitoring.distributed`: ranks, sharded gradients, synchronised backwards.

The rules that judge the numbers live in :mod:`moola_watch.rules`, shared with the watcher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from moola.utils.monitoring.console import PREFIX, console_lines
from moola.utils.monitoring.distributed import distributed_rank, rank_log_path
from moola.utils.monitoring.monitor import GradientMonitor
from moola.utils.monitoring.norms import (
    compute_gradient_statistics,
    compute_layer_gradient_norms,
    gradient_statistics_from_norms,
)
from moola.utils.monitoring.task_balance import (
    BalanceUnavailable,
    RepresentationTap,
    TaskGradients,
    backward_with_task_balance,
    compute_task_balance,
    parameters_reached,
    shared_parameters_of,
)
from moola_watch import rules
from moola_watch.rules import CollapseVerdict, Thresholds

__all__ = [
    "PREFIX",
    "BalanceUnavailable",
    "GradientMonitor",
    "RepresentationTap",
    "TaskGradients",
    "backward_with_task_balance",
    "compute_gradient_statistics",
    "compute_layer_gradient_norms",
    "compute_task_balance",
    "compute_task_gradient_ratio",
    "console_lines",
    "detect_exploding_gradients",
    "detect_task_collapse",
    "detect_vanishing_gradients",
    "distributed_rank",
    "gradient_statistics_from_norms",
    "parameters_reached",
    "rank_log_path",
    "shared_parameters_of",
]


def detect_vanishing_gradients(layer_norms: dict[str, float], threshold: float = 1e-7) -> list[str]:
    """Layers whose gradient L2 norm is below ``threshold``."""
    return rules.vanishing_layers(layer_norms, threshold)


def detect_exploding_gradients(layer_norms: dict[str, float], threshold: float = 10.0) -> list[str]:
    """Layers whose gradient L2 norm is above ``threshold`` (finite; NaN/inf are reported separately)."""
    return rules.exploding_layers(layer_norms, threshold)


def compute_task_gradient_ratio(
    pointer_loss: torch.Tensor,
    type_loss: torch.Tensor,
    model: nn.Module,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    shared_parameters: Sequence[nn.Parameter] | None = None,
    representation: torch.Tensor | None = None,
) -> TaskGradients:
    """The spec's pointer/type gradient-norm ratio for the weighted losses ``beta * pointer_loss`` and
    ``alpha * type_loss`` (see :func:`compute_task_balance`, the tasks API it wraps). ``float(result)`` is the
    ratio; it is ``inf`` when the type gradient is zero and NaN when both are."""
    return compute_task_balance(
        {"pointer": pointer_loss, "type": type_loss},
        model,
        weights={"pointer": beta, "type": alpha},
        shared_parameters=shared_parameters,
        representation=representation,
    )


def detect_task_collapse(
    task_grad_ratios: Sequence[float], window_size: int = 10, collapse_threshold: float = 5.0
) -> CollapseVerdict:
    """The spec's sliding-window check: the mean of the last ``window_size`` pointer/type ratios above
    ``collapse_threshold`` means the pointer task dominates, below ``1 / collapse_threshold`` the type task
    does. Fewer than ``window_size`` ratios give ``state == "not_enough_data"``."""
    low = 1.0 / collapse_threshold
    defaults = Thresholds()
    th = Thresholds(
        window=window_size,
        collapse_high=collapse_threshold,
        collapse_low=low,
        balance_high=min(defaults.balance_high, collapse_threshold),
        balance_low=max(min(defaults.balance_low, collapse_threshold), low),
    )
    return rules.collapse_verdict(task_grad_ratios, th)
