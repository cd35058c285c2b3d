"""Gradient monitoring: measuring functions, :class:`GradientMonitor` and the JSONL record writer."""

from moola.utils.monitoring.gradient_diagnostics import (
    GradientMonitor,
    TaskGradients,
    compute_gradient_statistics,
    compute_layer_gradient_norms,
    compute_task_gradient_ratio,
    detect_exploding_gradients,
    detect_task_collapse,
    detect_vanishing_gradients,
)

__all__ = [
    "GradientMonitor",
    "TaskGradients",
    "compute_gradient_statistics",
    "compute_layer_gradient_norms",
    "compute_task_gradient_ratio",
    "detect_exploding_gradients",
    "detect_task_collapse",
    "detect_vanishing_gradients",
]
