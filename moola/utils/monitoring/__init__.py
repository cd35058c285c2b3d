"""Gradient monitoring: :class:`GradientMonitor`, the measuring functions and the JSONL record writer.

The spec's names are in :mod:`moola.utils.monitoring.gradient_diagnostics`; the work is done in ``norms``,
``task_balance``, ``monitor`` (with ``cadence``, ``stats_probe``, ``balance_probe`` and ``run_output``),
``records``, ``distributed`` and ``console``.
"""

from moola.utils.monitoring.gradient_diagnostics import (
    BalanceUnavailable,
    GradientMonitor,
    RepresentationTap,
    TaskGradients,
    compute_gradient_statistics,
    compute_layer_gradient_norms,
    compute_task_balance,
    compute_task_gradient_ratio,
    console_lines,
    detect_exploding_gradients,
    detect_task_collapse,
    detect_vanishing_gradients,
)

__all__ = [
    "BalanceUnavailable",
    "GradientMonitor",
    "RepresentationTap",
    "TaskGradients",
    "compute_gradient_statistics",
    "compute_layer_gradient_norms",
    "compute_task_balance",
    "compute_task_gradient_ratio",
    "console_lines",
    "detect_exploding_gradients",
    "detect_task_collapse",
    "detect_vanishing_gradients",
]
