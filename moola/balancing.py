"""Automatic loss weighting, opt-in, fed by the monitor's task-balance measurements.

A balancer looks at one measured :class:`~moola.utils.monitoring.TaskGradients` and returns new task weights
(or None to leave them). Both methods move each task's weighted gradient norm on the shared parameters toward
a target, by a damped multiplicative step (at most ``max_change`` per update), keeping the sum of the weights:

- ``ratio`` (the spec's Phase 5 idea): targets equal for every task, and nothing changes while the tasks
  are within ``band`` (largest / smallest weighted norm at most 1.5: inside the spec's healthy 2.0 with a
  margin, so one noisy batch does not push the window out of it);
- ``gradnorm`` (Chen et al., 2018): targets ``mean norm * r_i ** alpha``, where ``r_i`` is task i's inverse
  training rate, its loss relative to its first measured loss over the same for all tasks: a task that has
  learned less gets more gradient. GradNorm reaches the targets by gradient descent on the weights; here the
  step toward them is taken directly, from the numbers the monitor already measured (no extra backward).

Published comparisons find that no balancing method reliably beats well-tuned fixed weights: this is a guard
against a starved task, not a tuner (see the README's measurements).

Under torch.distributed each rank measures the balance of its own batch, so each rank's update would move its
weights differently and the replicas would optimise different totals: :meth:`LossBalancer.synchronise`, called
by every rank once per step after the update, gives every rank rank 0's weights (the ones its log records).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from moola.utils.monitoring.distributed import distributed_rank
from moola.utils.monitoring.task_balance import TaskGradients

METHODS = ("ratio", "gradnorm")


@dataclass
class LossBalancer:
    """Task weights that follow the measured balance. ``weights`` are the current ones (use them in the total
    loss); :meth:`update` returns the new weights when it changed them; under torch.distributed,
    :meth:`synchronise` after it on every rank, every step."""

    weights: dict[str, float]
    method: str = "ratio"
    damping: float = 0.5  # the fraction of the log-distance to the target covered per update
    max_change: float = 2.0  # at most this factor per weight per update
    band: float = 1.5  # ratio method: largest / smallest weighted norm tolerated (inside the healthy 2.0)
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

    def synchronise(self) -> None:
        """Take rank 0's weights on every rank of an initialised torch.distributed group (a no-op without one,
        or with a single process); the task names must be the same, in the same order, on every rank.

        A collective: every rank must call it at the same point of every step, whether or not its own update
        changed anything or its balance was measured, or the ranks wait on each other forever."""
        if distributed_rank()[1] < 2:
            return
        nccl = torch.distributed.get_backend() == "nccl"  # nccl moves only CUDA tensors, gloo CPU ones
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        values = torch.tensor(list(self.weights.values()), dtype=torch.float64, device=device)
        torch.distributed.broadcast(values, src=0)
        self.weights = dict(zip(self.weights, values.tolist(), strict=True))
