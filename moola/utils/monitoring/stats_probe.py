"""Gradient statistics as the monitor measures them at a step: every layer's gradient norm through the model's
:class:`~moola.utils.monitoring.norms.NormPlan` (one host transfer, a GradScaler's scale divided out), their
statistics, the console block, and the ``grad_stats`` record with the summary the rules judge it by. When to
measure is the cadence's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from moola.utils.monitoring.cadence import Cadence
from moola.utils.monitoring.console import stats_block
from moola.utils.monitoring.norms import NormPlan, gradient_statistics, named_parameters
from moola.utils.monitoring.records import compact_layer_norms
from moola.utils.monitoring.run_output import RunOutput
from moola_watch import schema
from moola_watch.rules import GradSummary, Thresholds


class StatsProbe:
    """The gradient statistics of one monitored run, at the ``cadence``'s step and epoch, said and recorded
    through ``output``. Keeps the model's norm plan from step to step."""

    def __init__(self, cadence: Cadence, output: RunOutput) -> None:
        self._cadence = cadence
        self._output = output
        self._norm_plan = NormPlan([])

    def _plan(self, model: nn.Module) -> NormPlan:
        """The model's parameters grouped by (device, dtype), regrouped when a parameter or module was added or
        replaced; every parameter, frozen ones too, so one unfrozen later is measured from its first gradient."""
        if not self._norm_plan.is_current(model):
            self._norm_plan = NormPlan(named_parameters(model), model)
        return self._norm_plan

    def measure(
        self,
        model: nn.Module,
        scaler: torch.amp.GradScaler | None,
        still_scaled: bool | Collection[torch.Tensor],
        *,
        thresholds: Thresholds,
        max_layer_norms: int,
    ) -> dict[str, Any]:
        """Measure the gradients now in ``model`` (``scaler`` and ``still_scaled``: see
        :meth:`~moola.utils.monitoring.monitor.GradientMonitor.on_before_optimizer_step`), say them on the
        console and record them; return the ``grad_stats`` body (norms are L2, ``cost_ms`` in milliseconds).
        Beyond ``max_layer_norms`` tensors, per-layer norms are recorded by module prefix."""
        began = time.perf_counter()
        cadence = self._cadence
        scaler = scaler if scaler is not None and scaler.is_enabled() else None
        # The scale rides along with the norms: one host sync, not a second one for get_scale()'s .item(). A
        # scaler that has scaled nothing yet holds no scale tensor; get_scale() then gives its initial scale.
        names, values, scale = self._plan(model).norms(scaler._get_scale_async() if scaler is not None else None)
        if not names:
            raise ValueError("no parameter has a gradient yet: measure after backward()")
        amp_scale = (scale[0] if scale else scaler.get_scale()) if scaler is not None else None
        if amp_scale and still_scaled is True:
            values = [value / amp_scale for value in values]  # the norm is linear in the gradient
        elif amp_scale and not isinstance(still_scaled, bool) and still_scaled:  # some parameters' gradients only
            scaled = {id(p) for p in still_scaled}
            scaled_names = {name for name, p in self._plan(model).named if id(p) in scaled}
            values = [
                value / amp_scale if name in scaled_names else value for name, value in zip(names, values, strict=True)
            ]
        stats = gradient_statistics(names, values)
        norms = dict(zip(names, values, strict=True))
        overflow = False
        if scaler is not None:
            overflow = stats["nonfinite_count"] > 0
            stats["amp"] = {"scale": amp_scale, "overflow": overflow}
        if self._output.console_on():
            where = f"Epoch {cadence.epoch}" if cadence.epoch is not None else f"Step {cadence.step}"
            self._output.echo(stats_block(where, stats, norms, overflow, thresholds))
        stats.update(compact_layer_norms(norms, max_layer_norms, vanishing=thresholds.vanishing))
        if stats["nonfinite_count"] > max_layer_norms:
            stats["nonfinite_layers"] = stats["nonfinite_layers"][:max_layer_norms]
        stats["cost_ms"] = (time.perf_counter() - began) * 1e3
        # A finite mean is a finite sum of the norms: every norm and every statistic is finite (and a grouped
        # norm of finite ones could still overflow, so grouped layers take the converting encoder).
        finite = math.isfinite(stats["mean_norm"]) and not stats["nonfinite_count"] and "layer_groups" not in stats
        if scaler is not None:
            finite = finite and math.isfinite(stats["amp"]["scale"])
        # The rules' summary of the record, from the statistics of the very norms it holds (grouped ones differ).
        summary = (
            None
            if "layer_groups" in stats
            else GradSummary(stats["min_norm"], stats["max_norm"], stats["nonfinite_count"], stats["mean_norm"])
        )
        fields = {"epoch": cadence.epoch, "step": cadence.step, **stats}
        self._output.emit_built(schema.GRAD_STATS, fields, finite=finite, summary=summary)
        return stats
