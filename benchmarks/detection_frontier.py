"""How far simple thresholds on the training-side signals can go on the labelled corpus: a grid search over
conjunctions of four signals of the task judged, each over the collapse window, scored as the verdict is (the
first sample any task meets the condition is the alarm; a healthy run alarmed at any time is a false alarm).

    .venv/bin/python benchmarks/detection_frontier.py      # needs runs/detection-corpus (detection_corpus.py)

The signals, per task and balance sample, once the window is full:

* ``dominance``: the window mean of the largest task's weighted gradient norm over this task's;
* ``share``: the window mean of this task's share of the update;
* ``drop``: the change of its epoch training loss over the window (mean of the last three epochs over the first
  three: -0.1 is down 10%);
* ``rate``: its training loss now over its first loss in the run, the first balance sample's batch (GradNorm's
  training rate; 0.9: still 90%).

Thresholds are chosen on the tuning seeds (best recall with at most 5% of healthy runs alarmed) and reported on
the held-out seeds. The point is the frontier, not a new rule: it says how much recall any combination of these
numbers buys on this corpus at the false-alarm target.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from detection import CORPUS, FALSE_ALARM_TARGET, records

from moola_watch import schema

WINDOW = 10
ENDS = 3  # epochs averaged at each end of a window, as the rule does
Signals = dict[str, float]
Condition = Callable[[Signals], bool]
GRID = {
    "dominance": (2.0, 3.0, 5.0, 8.0, 12.0),
    "share": (0.02, 0.05, 0.1, 1.0),
    "drop": (0.02, 0.05, 0.1, 0.2, 1.0),
    "rate": (0.0, 0.5, 0.7, 0.8, 0.9),
}


@dataclass(frozen=True)
class LabelledRun:
    family: str
    label: str
    starved: tuple[str, ...]  # every starved task (of three, two may starve)
    held_out: bool
    samples: list[dict[str, Signals]]  # per balance sample with a full window: task -> signals


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return math.fsum(items) / len(items)


def signals(log: list[schema.Record]) -> list[dict[str, Signals]]:
    """Each task's four signals at every balance sample whose window is full."""
    balance: list[schema.Record] = []
    losses: list[dict[str, float]] = []
    first: dict[str, float] = {}
    out: list[dict[str, Signals]] = []
    for record in log:
        for task, loss in (record.get("losses") or record.get("task_losses") or {}).items():
            first.setdefault(task, loss)
        if record["kind"] == schema.EPOCH and record.get("task_losses"):
            losses.append(record["task_losses"])
        if record["kind"] != schema.TASK_BALANCE:
            continue
        balance.append(record)
        if len(balance) < WINDOW or len(losses) < 2 * ENDS:
            continue
        window, recent = balance[-WINDOW:], losses[-WINDOW:]
        out.append({
            task: {
                "dominance": _mean(max(b["norms"].values()) / b["norms"][task] if b["norms"][task] > 0 else math.inf
                                   for b in window),
                "share": _mean(b["shares"][task] for b in window),
                "drop": _mean(e[task] for e in recent[-ENDS:]) / _mean(e[task] for e in recent[:ENDS]) - 1,
                "rate": _mean(e[task] for e in losses[-ENDS:]) / first[task],
            }
            for task in window[-1]["norms"]
        })  # fmt: skip
    return out


def condition(dominance: float, share: float, drop: float, rate: float) -> Condition:
    return lambda s: s["dominance"] > dominance and s["share"] < share and s["drop"] > -drop and s["rate"] > rate


def alarm(run: LabelledRun, met: Condition) -> str | None:
    """The task named at the first sample any task meets the condition."""
    for sample in run.samples:
        for task, values in sample.items():
            if met(values):
                return task
    return None


def score(runs: list[LabelledRun], met: Condition) -> tuple[int, int, int, int]:
    """(starved runs caught naming a starved task, starved runs, healthy runs alarmed, healthy runs)."""
    named = [(run, alarm(run, met)) for run in runs if run.label in ("starved", "healthy")]
    starved = [(run, task) for run, task in named if run.label == "starved"]
    healthy = [(run, task) for run, task in named if run.label == "healthy"]
    return (sum(task in run.starved for run, task in starved), len(starved),
            sum(task is not None for _, task in healthy), len(healthy))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    runs = [LabelledRun(r["family"], r["label"], tuple(r["starved_tasks"]), r["held_out"], signals(records(r["log"])))
            for r in json.loads((args.corpus / "labels.json").read_text())]  # fmt: skip
    tuning = [run for run in runs if not run.held_out]
    held_out = [run for run in runs if run.held_out]
    ranked = []
    for values in itertools.product(*GRID.values()):
        caught, _starved, alarmed, healthy = score(tuning, condition(*values))
        ranked.append((alarmed <= FALSE_ALARM_TARGET * healthy, caught, -alarmed, values))
    ranked.sort(reverse=True)
    count = len(ranked)
    print(f"{count} conjunctions of {', '.join(GRID)}; the best on the {len(tuning)} tuning runs with at most "
          f"{FALSE_ALARM_TARGET:.0%} false alarms, and the same numbers on the held-out runs:")  # fmt: skip
    for _ok, _caught, _alarmed, values in ranked[: args.top]:
        named = ", ".join(f"{name} {'>' if name in ('dominance', 'rate') else '<' if name == 'share' else 'down <'} "
                          f"{value:g}" for name, value in zip(GRID, values, strict=True))  # fmt: skip
        t, h = score(tuning, condition(*values)), score(held_out, condition(*values))
        print(
            f"  {named}: tuning {t[0]}/{t[1]} caught ({t[0] / t[1]:.0%}), {t[2]}/{t[3]} false alarms; "
            f"held out {h[0]}/{h[1]} ({h[0] / h[1]:.0%}), {h[2]}/{h[3]} false alarms"
        )


if __name__ == "__main__":
    main()
