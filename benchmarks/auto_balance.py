"""How much automatic loss balancing gives back to a starved task, and what the other task pays.

    .venv/bin/python benchmarks/auto_balance.py [--seeds 3] [--epochs 20]

The project's trainer at a capacity where the tasks compete (hidden size 4), trained with fixed balanced
weights, with skewed weights that starve one task, and with the same skewed weights under ``--auto-balance
ratio`` and ``gradnorm``. Ground truth is held-out: validation type accuracy and pointer error. For the
starved task, *recovered* is the share of the gap between the skewed run and the balanced run that
balancing closes (1.0: as good as balanced weights; 0: no help; negative: worse). A table, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from moola.data import make_synthetic
from moola.models.enhanced_simple_lstm import EnhancedSimpleLSTM

#: (name, alpha, beta, starved task)
SKEWS = (("pointer x50", 1.0, 50.0, "type"), ("type x50", 50.0, 1.0, "pointer"))
METHODS = (None, "ratio", "gradnorm")


@dataclass(frozen=True)
class Outcome:
    type_acc: float
    pointer_err: float
    last_ratio: float | None


def train(alpha: float, beta: float, method: str | None, seed: int, epochs: int) -> Outcome:
    """One monitored run; its held-out metrics and the last measured pointer/type ratio."""
    data = make_synthetic(600, seed=seed)
    model = EnhancedSimpleLSTM(hidden_size=4, seed=seed)
    model.fit(
        data.X, data.y, data.expansion_start, data.expansion_end,
        epochs=epochs, loss_alpha=alpha, loss_beta=beta, monitor_gradients=True,
        every_n_steps=5, auto_balance=method, console=Console(quiet=True),
    )  # fmt: skip
    final = model.history[-1]
    assert model.monitor is not None
    balance = model.monitor.engine.last_balance
    return Outcome(final["type_acc"], final["pointer_err_bars"], balance.get("ratio") if balance else None)


def metric(outcome: Outcome, task: str) -> float:
    """The task's held-out metric, oriented so that higher is better."""
    return outcome.type_acc if task == "type" else -outcome.pointer_err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    seeds = range(args.seeds)
    balanced = {seed: train(1.0, 1.0, None, seed, args.epochs) for seed in seeds}
    table = Table(
        title=f"Automatic balancing on starved runs (hidden 4, {args.epochs} epochs, seeds 0-{args.seeds - 1})"
    )
    for column in ("weights", "method", "type acc", "pointer err (bars)", "last ratio", "starved task recovered",
                   "other task change"):  # fmt: skip
        table.add_column(column, justify="right" if column != "method" else "left")
    table.add_row(
        "1 / 1 (balanced)", "fixed", f"{statistics.fmean(o.type_acc for o in balanced.values()):.3f}",
        f"{statistics.fmean(o.pointer_err for o in balanced.values()):.2f}", "", "", "",
    )  # fmt: skip
    for name, alpha, beta, starved in SKEWS:
        other = "pointer" if starved == "type" else "type"
        skewed: dict[int, Outcome] = {}
        for method in METHODS:
            runs = {seed: train(alpha, beta, method, seed, args.epochs) for seed in seeds}
            if method is None:
                skewed = runs
            recovered, cost = [], []
            for seed in seeds:
                gap = metric(balanced[seed], starved) - metric(skewed[seed], starved)
                if gap > 1e-9:
                    recovered.append((metric(runs[seed], starved) - metric(skewed[seed], starved)) / gap)
                cost.append(metric(runs[seed], other) - metric(skewed[seed], other))
            ratios = [r.last_ratio for r in runs.values() if r.last_ratio is not None]
            table.add_row(
                f"{alpha:g} / {beta:g} ({name})",
                method or "fixed",
                f"{statistics.fmean(r.type_acc for r in runs.values()):.3f}",
                f"{statistics.fmean(r.pointer_err for r in runs.values()):.2f}",
                f"{statistics.median(ratios):.2f}" if ratios else "-",
                "" if method is None else (f"{statistics.fmean(recovered):+.0%}" if recovered else "no gap"),
                "" if method is None else f"{statistics.fmean(cost):+.3f} ({other})",
            )
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
