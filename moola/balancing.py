"""Automatic loss weighting, opt-in, fed by the monitor's task-balance measurements.

A balancer looks at one measured :class:`~moola.utils.monitoring.TaskGradients` and returns new task weights
(or None to leave them). Both methods move each task's weighted gradient norm on the shared parameters toward
a target, by a damped multiplicative step (at most ``max_change`` per update), keeping the sum of the weights:

- ``ratio`` (the spec's Phase 5 idea): targets equal for every task, and nothing changes while the tasks
  are within the healthy band (largest / smallest weighted norm at most ``band``, the spec's 2.0);
- ``gradnorm`` (Chen et al., 2018): targets ``mean norm * r_i ** alpha``, where ``r_i`` is task i's inverse
  training rate, its loss relative to its first measured loss over the same for all tasks: a task that has
  learned less gets more gradient. GradNorm reaches the targets by gradient descent on the weights; here the
  step toward them is taken directly, from the numbers the monitor already measured (no extra backward).

Published comparisons find that no balancing method reliably beats well-tuned fixed weights: this is a guard
against a starved task, not a tuner (see the README's measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from moola.utils.monitoring.task_balance import TaskGradients

METHODS = ("ratio", "gradnorm")


@dataclass
class LossBalancer:
    """Task weights that follow the measured balance. ``weights`` are the current ones (use them in the total
    loss); :meth:`update` returns the new weights when it changed them."""

    weights: dict[str, float]
    method: str = "ratio"
    damping: float = 0.5  # the fraction of the log-distance to the target covered per update
    max_change: float = 2.0  # at most this factor per weight per update
    band: float = 2.0  # ratio method: largest / smallest weighted norm tolerated
    alpha: float = 1.5  # gradnorm's restoring-force strength
    initial_losses: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown balancing method {self.method!r} (choose from {', '.join(METHODS)})")
        if not 0 < self.damping <= 1 or self.max_change <= 1 or self.band < 1:
            raise ValueError("damping must be in (0, 1], max_change above 1 and band at least 1")
        self.weights = {name: float(w) for name, w in self.weights.items()}

    def targets(self, balance: TaskGradients) -> dict[str, float] | None:
        """Each task's target weighted gradient norm, or None when no change is called for."""
        norms = {name: balance.norms[name] for name in self.weights if name in balance.norms}
        if len(norms) < 2 or not all(math.isfinite(n) and n > 0 for n in norms.values()):
            return None  # a zero or non-finite norm is a fault for the rules, not a reason to reweigh
        mean = math.fsum(norms.values()) / len(norms)
        if self.method == "ratio":
            if max(norms.values()) / min(norms.values()) <= self.band:
                return None
            return dict.fromkeys(norms, mean)
        for name in norms:
            self.initial_losses.setdefault(name, balance.losses.get(name, math.nan))
        rates = {name: balance.losses.get(name, math.nan) / self.initial_losses[name] for name in norms}
        if not all(math.isfinite(r) and r > 0 for r in rates.values()):
            return None
        mean_rate = math.fsum(rates.values()) / len(rates)
        return {name: mean * (rates[name] / mean_rate) ** self.alpha for name in norms}

    def update(self, balance: TaskGradients) -> dict[str, float] | None:
        """New weights from one measurement (made with the current weights), or None if unchanged."""
        targets = self.targets(balance)
        if targets is None:
            return None
        total = math.fsum(self.weights.values())
        moved = dict(self.weights)
        for name, target in targets.items():
            factor = (target / balance.norms[name]) ** self.damping
            moved[name] *= min(self.max_change, max(1.0 / self.max_change, factor))
        scale = total / math.fsum(moved.values())
        moved = {name: w * scale for name, w in moved.items()}
        if all(math.isclose(moved[n], self.weights[n], rel_tol=1e-3) for n in moved):
            return None
        self.weights = moved
        return dict(moved)
